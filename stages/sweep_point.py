"""sweep_point: one point of the label-budget sweep: one run, one budget of MNIST labels, one seed.

Reads data/mnist.npz, models/fashion.weights.h5 (transfer and frozen runs) and params base.image_size,
model.*, transfer.*, sweep.* (except the lists of budgets and seeds, so adding a seed re-runs only new points).
Writes one JSON record: sizes, budget rule, the validation-selected step, and the test accuracy.
dvc.yaml runs it three times (transfer, frozen, scratch) per stage sweep@<budget>-<seed>, e.g.
dvc repro sweep@100-0  (names: dvc stage list)
"""

import argparse
from pathlib import Path

from tlpipe.cli import run
from tlpipe.data import load_npz
from tlpipe.io import write_json
from tlpipe.params import SWEEP_RUNS, load_params
from tlpipe.sweep import run_point


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run", choices=SWEEP_RUNS, required=True)
    parser.add_argument("--budget", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--source-weights", type=Path, help="Fashion weights (transfer and frozen runs)")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.run != "scratch" and args.source_weights is None:
        parser.error(f"--run {args.run} needs --source-weights")
    params = load_params()
    record = run_point(args.run, args.budget, args.seed, params, load_npz(args.data), args.source_weights)
    print(f"{args.out}: test accuracy {record['test_accuracy']:.4f} in {record['seconds']:.1f} s")
    write_json(args.out, record)


if __name__ == "__main__":
    run(main)
