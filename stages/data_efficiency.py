"""data_efficiency: aggregate the sweep's points into mean, std and 95 % intervals per run and label budget.

Reads the records <points>/seed-<seed>/<run>-<budget>-<seed>.json of --runs x params sweep.budgets x sweep.seeds
(from the first --points folder that has each), and the pretraining's DVCLive summary (its training seconds).
Writes the metrics JSON (accuracies, paired differences against scratch with their verdict against sweep.margin,
steps to converge), and in the plots folder accuracy.csv/png (accuracy against labels), gain.csv/png (each run
minus scratch, with the equivalence band) and convergence.csv/png (validation accuracy against steps).
Run alone: dvc repro data_efficiency  (the study's: dvc repro study/dvc.yaml:study)
"""

import argparse
import json
from pathlib import Path

from tlpipe.core.cli import run
from tlpipe.core.errors import PipelineError
from tlpipe.core.io import to_csv, write_json, write_text
from tlpipe.core.live import measured, read_summary
from tlpipe.core.params import SWEEP_RUNS, load_params
from tlpipe.lab.sweep import aggregate, curve_rows, plot_rows, point_path
from tlpipe.report.figures import gain_rows, plot_convergence, plot_gain, plot_png

SOURCES = {"fashion_mnist": "Fashion-MNIST", "mnist": "MNIST"}


def read_record(folders: list[Path], run_name: str, budget: int, seed: int) -> dict:
    paths = [point_path(folder, run_name, budget, seed) for folder in folders]
    path = next((p for p in paths if p.exists()), None)
    if path is None:
        raise PipelineError(f"{' or '.join(str(p) for p in paths)}: sweep point is missing; run `dvc repro` (the "
                            "study's: `make study`) to compute it")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PipelineError(f"{path}: unreadable sweep point ({e}); re-run it with `dvc repro -f`") from e


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=Path, nargs="+", required=True, help="folders of the points' records")
    parser.add_argument("--runs", choices=SWEEP_RUNS, nargs="+", required=True)
    parser.add_argument("--pretrain-log", type=Path, required=True, help="the pretrain stage's DVCLive folder")
    parser.add_argument("--metrics-out", type=Path, required=True)
    parser.add_argument("--plots-out", type=Path, required=True)
    args = parser.parse_args()
    if "scratch" not in args.runs:
        parser.error("--runs must include scratch: every other run is compared with it")
    params = load_params()
    cfg = params.sweep
    records = [read_record(args.points, r, b, s) for r in args.runs for b in cfg.budgets for s in cfg.seeds]
    summary = aggregate(records, cfg) | measured(records)
    # what transfer's head start costs: the pretraining, measured on the same machine as the points
    summary["pretrain_seconds"] = read_summary(args.pretrain_log)["train_seconds"]
    write_text(args.plots_out / "accuracy.csv", to_csv(plot_rows(summary)))
    plot_png(args.plots_out / "accuracy.png", summary)
    write_text(args.plots_out / "gain.csv", to_csv(gain_rows(summary)))
    target = Path(params.target.path).stem.replace("mnist", "MNIST")
    plot_gain(args.plots_out / "gain.png", summary,
              f"{SOURCES[params.pretrain.source]} features on {target}: gain over scratch\n"
              f"mean of {len(cfg.seeds)} seeds, 95 % t-interval")
    curves = curve_rows(records)
    if curves:  # none when no budget has validation images (one label per class)
        write_text(args.plots_out / "convergence.csv", to_csv(curves))
        plot_convergence(args.plots_out / "convergence.png", curves)
    write_json(args.metrics_out, summary)


if __name__ == "__main__":
    run(main)
