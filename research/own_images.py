"""The label-budget sweep on a folder of one's own images, from two sources: which pretraining helps, and when.

Usage: python research/own_images.py --folder DIR --weights mnist=W1 fashion_mnist=W2 --out REPORT.json
       [--budgets 1 5 10 30] [--seeds 0 1 2 3 4] [--plot FIGURE.png]
       python research/own_images.py --replot REPORT.json FIGURE.png   (the figure again, from a report)

The folder is read as the prepare stage reads params target.path (with its test/ as the test set). Each seed
draws the labels per class and the initialisation; at each budget, the sweep's runs (tlpipe.lab.points, the engine of
the sweep stages, with params sweep.* and sweep.per_class) train on the same labelled images: transfer and frozen
from each source's pretrained weights (models/source.named.h5 of a pipeline run with that pretrain.source), and
scratch. The report has, per arm and budget, the mean test accuracy over seeds with its 95 % t-interval, and the
paired differences (each transfer against scratch, and the MNIST source against the Fashion one).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.bench import cpu_info  # noqa: E402
from tlpipe.apps.folder import prepare_target  # noqa: E402
from tlpipe.core.params import load_params  # noqa: E402
from tlpipe.lab.sweep import summarize  # noqa: E402
from tlpipe.report.figures import pyplot, save_figure  # noqa: E402

LABELS = {"mnist": "MNIST", "fashion_mnist": "Fashion-MNIST"}
PAIRS = [("transfer[mnist]", "scratch"), ("transfer[fashion_mnist]", "scratch"), ("frozen[mnist]", "scratch"),
         ("frozen[fashion_mnist]", "scratch"), ("transfer[mnist]", "transfer[fashion_mnist]")]


def main() -> None:
    if sys.argv[1:2] == ["--replot"] and len(sys.argv) == 4:
        plot(json.loads(Path(sys.argv[2]).read_text()), Path(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--weights", nargs="+", required=True, metavar="SOURCE=WEIGHTS")
    parser.add_argument("--budgets", type=int, nargs="+", default=[1, 5, 10, 30], help="labels per class")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args()
    weights = dict(item.split("=", 1) for item in args.weights)
    from tlpipe.lab.points import run_points  # TensorFlow: after the arguments are checked

    params, data, report = folder_sweep(args.folder, args.budgets, args.seeds)
    arrays = data.arrays()
    started = time.perf_counter()
    accuracy: dict[str, dict[int, dict[int, float]]] = {}
    for seed in args.seeds:
        for source, path in weights.items():
            for record in run_points(["transfer", "frozen"], args.budgets, seed, params, arrays, Path(path)):
                arm = f"{record['run']}[{source}]"
                accuracy.setdefault(arm, {}).setdefault(record["budget"], {})[seed] = record["test_accuracy"]
        for record in run_points(["scratch"], args.budgets, seed, params, arrays, None):
            accuracy.setdefault("scratch", {}).setdefault(record["budget"], {})[seed] = record["test_accuracy"]
        print(f"seed {seed} done, {time.perf_counter() - started:.0f} s", flush=True)
    out = {
        "folder": args.folder.name, "machine": cpu_info()["model"], "date": time.strftime("%Y-%m-%d"),
        "seconds": round(time.perf_counter() - started, 1), "classes": data.classes, "images": report["total"],
        "budgets_per_class": args.budgets, "seeds": args.seeds,
        "sweep": {k: getattr(params.sweep, k) for k in ("steps", "batch_size", "lr", "head_lr", "head_fraction",
                                                        "val_fraction", "eval_every")},
        "arms": {arm: {str(b): summarize(list(by_seed.values())) for b, by_seed in budgets.items()}
                 for arm, budgets in accuracy.items()},
        "paired": {f"{a} - {b}": {str(budget): summarize([accuracy[a][budget][s] - accuracy[b][budget][s]
                                                          for s in args.seeds]) for budget in args.budgets}
                   for a, b in PAIRS if a in accuracy and b in accuracy},
    }
    args.out.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")
    if args.plot:
        plot(out, args.plot)


def folder_sweep(folder: Path, budgets: list[int], seeds: list[int]) -> tuple:
    """params.yaml with `folder` as the target and the sweep in labels per class; the folder prepared as the
    prepare stage does it: (params, TargetData, its report)."""
    params = load_params()
    params = params.model_copy(update={
        "target": params.target.model_copy(update={"path": str(folder)}),
        "sweep": params.sweep.model_copy(update={"per_class": True, "budgets": budgets, "seeds": seeds}),
    })
    return params, *prepare_target(params.target, params.base)


def plot(report: dict, path: Path) -> None:
    """Test accuracy against labels per class (log x), one line per arm, 95 % intervals as error bars."""
    import numpy as np

    fig, ax = pyplot().subplots(figsize=(7, 4.5), dpi=120)
    for arm, rows in report["arms"].items():
        budgets = sorted(int(b) for b in rows)
        mean, low, high = (np.array([rows[str(b)][k] for b in budgets]) for k in ("mean", "ci95_low", "ci95_high"))
        ax.errorbar(budgets, mean, yerr=[mean - low, high - mean], marker="o", capsize=4, label=arm,
                    linestyle="--" if arm.startswith("frozen") else "-")
    ax.set_xscale("log")
    ax.set_xticks(report["budgets_per_class"], [str(b) for b in report["budgets_per_class"]])
    ax.minorticks_off()
    ax.set_xlabel("labels per class")
    ax.set_ylabel("test accuracy (unseen fonts)")
    ax.set_title(f"{Path(report['folder']).name}: mean over {len(report['seeds'])} seeds, 95 % t-interval")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    save_figure(path, fig)


if __name__ == "__main__":
    main()
