"""Make a small digit set that is not MNIST: the digits 0-9 rendered from the fonts on this machine.

Usage: python research/fontdigits.py OUT [--per-font 2] [--test-share 0.4] [--seed 0]

Writes OUT/<digit>/<font>-<k>.png for the training fonts and OUT/test/<digit>/... for the others (fonts are split,
not images, so the test set's fonts are never seen in training): the layout the prepare stage reads as a target
folder. Each image is a dark digit on light paper, 64x64, varied in size, stroke width, position, rotation, ink
and paper grey and blur. Fonts that lack a digit, draw two digits alike or draw the same digits as a font already
taken (a variant under another name) are left out. Debian's font packages supply the fonts, e.g.

    apt-get install fonts-aenigma fonts-dejavu fonts-liberation fonts-freefont-ttf fonts-urw-base35 \\
        fonts-dkg-handwriting fonts-comic-neue fonts-noto-core fonts-open-sans fonts-linuxlibertine

The set depends on the fonts installed; OUT/fonts.txt lists the ones used and their split.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

CANVAS = 64
MAX_FILL = 0.6  # a glyph filling more of its box is a blob, not a readable digit
FONT_DIRS = ("/usr/share/fonts", "/usr/local/share/fonts")
TEST = "test"


def glyphs(font: ImageFont.FreeTypeFont) -> list[np.ndarray] | None:
    """The ten digits drawn plainly (fixed size, centred), or None if the font cannot draw them as ten digits."""
    drawn = []
    for text in [*"0123456789", "\u0378"]:  # U+0378 is unassigned: how the font draws a missing glyph
        image = Image.new("L", (48, 48), 0)
        box = ImageDraw.Draw(image).textbbox((0, 0), text, font=font)
        if box[2] - box[0] < 2 or box[3] - box[1] < 4:
            if text != "\u0378":
                return None
            drawn.append(None)
            continue
        ImageDraw.Draw(image).text((24 - (box[0] + box[2]) / 2, 24 - (box[1] + box[3]) / 2), text, fill=255,
                                   font=font)
        drawn.append(np.asarray(image) > 127)
    *digits, missing = drawn
    ink = [d.sum() for d in digits]
    if min(ink) < 15 or max(fill(d) for d in digits) > MAX_FILL:
        return None  # a digit missing, or drawn as a solid blob (decorative fonts)
    keys = {d.tobytes() for d in digits}
    if len(keys) < 10 or (missing is not None and missing.tobytes() in keys):
        return None  # two digits alike, or a digit drawn as the missing-glyph box
    return digits


def fill(mask: np.ndarray) -> float:
    """The share of its bounding box that a glyph's ink fills."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return float(mask.sum()) / ((rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1))


def find_fonts() -> list[Path]:
    return sorted({p for root in FONT_DIRS for p in Path(root).rglob("*") if p.suffix.lower() in (".ttf", ".otf")})


def usable_fonts(paths: list[Path]) -> list[Path]:
    """Fonts that draw ten distinct digits, one per distinct drawing."""
    kept, seen = [], set()
    for path in paths:
        try:
            font = ImageFont.truetype(str(path), 32)
            digits = glyphs(font)
        except OSError:
            continue
        if digits is None:
            continue
        key = hashlib.sha256(b"".join(d.tobytes() for d in digits)).hexdigest()
        if key not in seen:
            seen.add(key)
            kept.append(path)
    return kept


def render(path: Path, digit: int, rng: np.random.Generator) -> Image.Image:
    """One varied rendering of `digit` in the font at `path`: dark ink on light paper, CANVAS x CANVAS."""
    size = int(rng.integers(26, 46))
    font = ImageFont.truetype(str(path), size)
    stroke = int(rng.choice([0, 0, 1, 2]))
    layer = Image.new("L", (CANVAS * 2, CANVAS * 2), 0)
    draw = ImageDraw.Draw(layer)
    box = draw.textbbox((0, 0), str(digit), font=font, stroke_width=stroke)
    centre = CANVAS + rng.normal(0, 3, 2)
    draw.text((centre[0] - (box[0] + box[2]) / 2, centre[1] - (box[1] + box[3]) / 2), str(digit), fill=255,
              font=font, stroke_width=stroke, stroke_fill=255)
    layer = layer.rotate(float(rng.uniform(-12, 12)), resample=Image.Resampling.BILINEAR)
    layer = layer.crop((CANVAS // 2, CANVAS // 2, CANVAS * 3 // 2, CANVAS * 3 // 2))
    if rng.random() < 0.5:
        layer = layer.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.3, 1.0))))
    ink = np.asarray(layer, np.float32) / 255
    paper, dark = rng.uniform(190, 250), rng.uniform(0, 80)
    pixels = paper - ink * (paper - dark) + rng.normal(0, 4, ink.shape)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path)
    parser.add_argument("--per-font", type=int, default=2, help="renderings of each digit per font")
    parser.add_argument("--test-share", type=float, default=0.4, help="share of the fonts held out as test/")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.out.exists() and any(args.out.iterdir()):
        sys.exit(f"error: {args.out} exists and is not empty; remove it or name another folder")
    fonts = usable_fonts(find_fonts())
    if len(fonts) < 10:
        sys.exit(f"error: only {len(fonts)} usable fonts found under {', '.join(FONT_DIRS)}; install Debian's font "
                 "packages (see this script's docstring)")
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(fonts))
    n_test = round(args.test_share * len(fonts))
    split = {fonts[i]: "test" if rank < n_test else "train" for rank, i in enumerate(order)}
    lines = []
    for number, font in enumerate(fonts):
        where = args.out / TEST if split[font] == "test" else args.out
        stem = f"{number:03d}-{font.stem.replace(' ', '_')}"  # two folders may hold fonts of one name
        for digit in range(10):
            (where / str(digit)).mkdir(parents=True, exist_ok=True)
            for k in range(args.per_font):
                render(font, digit, rng).save(where / str(digit) / f"{stem}-{k}.png", optimize=True)
        lines.append(f"{split[font]}\t{font}")
    (args.out / "fonts.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    n_train = sum(1 for v in split.values() if v == "train")
    print(f"{args.out}: {len(fonts)} fonts ({n_train} training, {n_test} test), "
          f"{args.per_font * 10 * n_train} training and {args.per_font * 10 * n_test} test images")


if __name__ == "__main__":
    main()
