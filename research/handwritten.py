"""Real handwritten digits that are not MNIST, as a target folder: the UCI optical digits shipped with scikit-learn.

Usage: python research/handwritten.py OUT [--per-class 10] [--seed 0] [--half dev|report] [--unlabelled N]

scikit-learn's `load_digits` holds 1,797 digits handwritten by 43 people (UCI "Optical Recognition of Handwritten
Digits"), scanned and reduced to 8x8 pixels of 17 grey levels. They are split in two seeded halves: `dev`, for
choosing settings, and `report`, for reporting them. From the chosen half, --per-class labelled digits of each class
go to OUT/<digit>/ and the rest to OUT/test/<digit>/, each drawn as a scan would show it: dark ink on light
paper, scaled up 4x (32x32); --unlabelled N of the others go to OUT/unlabelled/ instead. Needs scikit-learn
(`pip install scikit-learn`), which is not a dependency of the pipeline.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0, help="which labelled digits of the half")
    parser.add_argument("--half", choices=("dev", "report"), default="report")
    parser.add_argument("--unlabelled", type=int, default=0, help="how many of the others go to OUT/unlabelled/")
    args = parser.parse_args(argv)
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        sys.exit("error: needs scikit-learn: pip install scikit-learn")
    if args.out.exists() and any(args.out.iterdir()):
        sys.exit(f"error: {args.out} exists and is not empty; remove it or name another folder")
    digits = load_digits()
    halves = np.random.default_rng(12345).permutation(len(digits.target))  # fixed: the two halves never change
    half = halves[: len(halves) // 2] if args.half == "dev" else halves[len(halves) // 2 :]
    rng = np.random.default_rng(args.seed)
    labelled = set()
    for digit in range(10):
        members = half[digits.target[half] == digit]
        labelled |= set(rng.choice(members, args.per_class, replace=False).tolist())
    rest = [i for i in half if i not in labelled]
    if not 0 <= args.unlabelled < len(rest):
        sys.exit(f"error: --unlabelled must be 0 to {len(rest) - 1} (the rest is the test set), got {args.unlabelled}")
    unlabelled = set(rng.choice(rest, args.unlabelled, replace=False).tolist()) if args.unlabelled else set()
    for i in half:
        name = str(digits.target[i])
        folder = args.out / (name if i in labelled else "unlabelled" if i in unlabelled else f"test/{name}")
        folder.mkdir(parents=True, exist_ok=True)
        ink = digits.images[i] / 16
        paper = np.rint(235 - 215 * ink).astype(np.uint8)
        Image.fromarray(paper).resize((32, 32), Image.Resampling.BILINEAR).save(folder / f"uci-{i:04d}.png")
    print(f"{args.out}: {len(labelled)} labelled, {len(unlabelled)} unlabelled, "
          f"{len(half) - len(labelled) - len(unlabelled)} test digits ({args.half} half)")


if __name__ == "__main__":
    main()
