"""RSS of a test pass over MNIST's test images by a model compiled with `steps_per_execution` steps per call.

    python benchmarks/predict_memory.py --steps-per-execution 50 1 --batch-size 512

For each value, in a fresh process: builds the MNIST model (params.yaml), compiles it as the sweep's Trainer
does, runs three test passes (tlpipe.train.evaluate) and prints the process's RSS before and after each. Keras
runs `steps_per_execution` predict steps per call into one graph, unrolled, which is why tlpipe.points.Trainer
tests on a model of its own (`tester`). Prints only: the numbers quoted in `benchmarks/profiles.md` are its output.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def one(steps_per_execution: int, batch_size: int, data: Path) -> None:
    sys.path.insert(0, str(ROOT))
    from tlpipe.bench import rss_mb
    from tlpipe.data import load_npz
    from tlpipe.model import build_model
    from tlpipe.params import load_params
    from tlpipe.train import evaluate

    params, arrays = load_params(), load_npz(data)
    model = build_model("mnist", params.model, params.base.image_size)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                  steps_per_execution=steps_per_execution)
    line = f"steps_per_execution {steps_per_execution:3d}, batches of {batch_size}: RSS {rss_mb()} MB"
    for _ in range(3):
        evaluate(model, arrays["x_test"], arrays["y_test"], batch_size)
        line += f" -> {rss_mb()}"
    print(line + " MB after each of three test passes", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps-per-execution", type=int, nargs="+", default=[50, 1])
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "mnist.npz")
    parser.add_argument("--one", action="store_true", help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.one:
        one(args.steps_per_execution[0], args.batch_size, args.data)
        return
    for steps in args.steps_per_execution:
        subprocess.run([sys.executable, __file__, "--one", "--steps-per-execution", str(steps),
                        "--batch-size", str(args.batch_size), "--data", str(args.data)], check=True)


if __name__ == "__main__":
    main()
