"""The study's second source-target pair: MNIST features on the font-digit set, every sweep run and control.

Usage: python research/font_pair.py --folder DIR --weights WEIGHTS --out REPORT.json --plot FIGURE.png
       [--budgets 1 5 10 30] [--seeds 0 1 2 3 4]

DIR is a folder target (research/fontdigits.py makes one, test/ being fonts never seen in training), read as the
prepare stage reads params target.path; WEIGHTS is models/source.named.h5 of a pipeline run with
pretrain.source: mnist. Every run of the sweep and the study (tlpipe.lab.points, params sweep.*) trains at each budget
of labels per class and seed; the report is data_efficiency's (tlpipe.lab.sweep.aggregate: accuracies, every run
minus scratch with its verdict against sweep.margin, steps to converge), and the figure its gain figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench import cpu_info  # noqa: E402
from research.own_images import folder_sweep  # noqa: E402
from tlpipe.core.params import SWEEP_RUNS  # noqa: E402
from tlpipe.lab.sweep import aggregate  # noqa: E402
from tlpipe.report.figures import plot_gain  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--weights", type=Path, required=True, help="MNIST-pretrained models/source.named.h5")
    parser.add_argument("--budgets", type=int, nargs="+", default=[1, 5, 10, 30], help="labels per class")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot", type=Path, required=True)
    args = parser.parse_args()
    from tlpipe.lab.points import run_points  # TensorFlow: after the arguments are checked

    params, data, report = folder_sweep(args.folder, args.budgets, args.seeds)
    arrays = data.arrays()
    started = time.perf_counter()
    records = []
    for seed in args.seeds:
        records += run_points(list(SWEEP_RUNS), args.budgets, seed, params, arrays, args.weights)
        print(f"seed {seed} done, {time.perf_counter() - started:.0f} s", flush=True)
    out = aggregate(records, params.sweep) | {
        "pair": f"MNIST features on {args.folder.name}", "folder": args.folder.name, "classes": data.classes,
        "images": report["total"], "machine": cpu_info()["model"], "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    plot_gain(args.plot, out, f"MNIST features on {args.folder.name} (unseen fonts): gain over scratch\n"
              f"mean of {len(args.seeds)} seeds, 95 % t-interval")


if __name__ == "__main__":
    main()
