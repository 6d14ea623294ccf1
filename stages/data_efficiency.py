"""data_efficiency: aggregate the sweep's points into mean, std and 95 % intervals per run and label budget.

Reads every metrics/sweep/seed-<seed>/<run>-<budget>-<seed>.json that params sweep.budgets x sweep.seeds call for.
Writes metrics/data_efficiency.json (DVC metrics), and in the plots folder accuracy.csv (the DVC plot with
error bars) and accuracy.png.
Run alone: dvc repro data_efficiency
"""

import argparse
import json
from pathlib import Path

from tlpipe.cli import run
from tlpipe.errors import PipelineError
from tlpipe.io import to_csv, write_json, write_text
from tlpipe.live import measured
from tlpipe.params import SWEEP_RUNS, load_params
from tlpipe.sweep import aggregate, plot_png, plot_rows, point_path


def read_record(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{path}: sweep point is missing; run `dvc repro` to compute it") from None
    except (OSError, ValueError) as e:
        raise PipelineError(f"{path}: unreadable sweep point ({e}); re-run it with `dvc repro -f`") from e


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=Path, required=True, help="folder of the points' JSON records")
    parser.add_argument("--metrics-out", type=Path, required=True)
    parser.add_argument("--plots-out", type=Path, required=True)
    args = parser.parse_args()
    cfg = load_params().sweep
    records = [
        read_record(point_path(args.points, r, b, s))
        for r in SWEEP_RUNS
        for b in cfg.budgets
        for s in cfg.seeds
    ]
    summary = aggregate(records, cfg) | measured(records)
    write_text(args.plots_out / "accuracy.csv", to_csv(plot_rows(summary)))
    plot_png(args.plots_out / "accuracy.png", summary)
    write_json(args.metrics_out, summary)


if __name__ == "__main__":
    run(main)
