"""sweep_point: the points of the label-budget sweep for one seed, at every budget of target labels.

Reads data/target.npz (its labelled pool and test set), models/source.named.h5 (the runs that transfer) and
params base.image_size, base.deterministic, model.*, transfer.*, sweep.* (except the list of seeds, so adding a
seed runs only its stage).
Writes one JSON record per point (sizes, budget rule, the validation-selected step, the test accuracy) as
<out-dir>/<run>-<budget>-<seed>.json. The points share one process, the frozen extractor's features and the
compiled models; each still starts from its own seeded initialisation, so its record is the one it gets alone.
dvc.yaml runs it once per stage sweep@<seed>, e.g. dvc repro sweep@0  (names: dvc stage list)
"""

import argparse
from pathlib import Path

from tlpipe.core.cli import run
from tlpipe.core.io import check_writable, write_json
from tlpipe.core.params import SWEEP_RUNS, load_params
from tlpipe.core.target import load_target
from tlpipe.lab.points import run_points
from tlpipe.lab.sweep import point_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", choices=SWEEP_RUNS, nargs="+", required=True)
    parser.add_argument("--budgets", type=int, nargs="+", help="default: params sweep.budgets")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--source-weights", type=Path, help="pretrained weights (every run but scratch and "
                        "random_frozen)")
    parser.add_argument("--out-dir", type=Path, required=True)
    args = parser.parse_args()
    if set(args.runs) - {"scratch", "random_frozen"} and args.source_weights is None:
        parser.error("every run but scratch and random_frozen needs --source-weights")
    params = load_params()
    check_writable(args.out_dir / "record.json")
    budgets = args.budgets or params.sweep.budgets
    records = run_points(args.runs, budgets, args.seed, params, load_target(args.data).arrays(), args.source_weights)
    # Written only once every point is done, so a failure leaves none of this stage's records behind.
    for record in records:
        out = args.out_dir / f"{point_name(record['run'], record['budget'], args.seed)}.json"
        print(f"{out}: test accuracy {record['test_accuracy']:.4f} in {record['seconds']:.1f} s")
        write_json(out, record)


if __name__ == "__main__":
    run(main)
