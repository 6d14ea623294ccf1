"""compare: evaluate every model once on its test set and compare transfer with scratch.

Reads data/*.npz, models/*.weights.h5, the DVCLive logs in metrics/logs/ and params base.*, model.*,
frozen_head.epochs, compare.*.
Writes metrics/compare.json and metrics/plots/ (validation curves, confusion pairs, accuracy.png).
Run alone: dvc repro compare
"""

import argparse
from pathlib import Path

from tlpipe.cli import run
from tlpipe.data import load_npz
from tlpipe.io import write_json
from tlpipe.live import read_curve, read_summary
from tlpipe.model import build_model
from tlpipe.params import load_params
from tlpipe.report import (
    ACCURACY_PNG,
    compare_metrics,
    evaluate,
    plot_accuracy_png,
    write_confusion,
    write_curves,
)
from tlpipe.train import make_deterministic
from tlpipe.transfer import load_weights


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path, help="folder with mnist.npz and fashion_mnist.npz")
    parser.add_argument("models", type=Path, help="folder with the stages' .weights.h5 files")
    parser.add_argument("logs", type=Path, help="folder with one DVCLive folder per training stage")
    parser.add_argument("metrics_out", type=Path)
    parser.add_argument("plots_out", type=Path)
    args = parser.parse_args()
    params = load_params()
    make_deterministic(params.base.seed)
    mnist, fashion = load_npz(args.data / "mnist.npz"), load_npz(args.data / "fashion_mnist.npz")

    def test(task: str, weights: str, arrays: dict) -> dict:
        model = build_model(task, params.model, params.base.image_size)
        load_weights(model, args.models / weights)
        return evaluate(model, arrays["x_test"], arrays["y_test"], params.base.batch_size)

    results = {
        "pretrain": test("fashion", "fashion.weights.h5", fashion),
        "frozen_head": test("mnist", "frozen_head.weights.h5", mnist),
        "transfer": test("mnist", "finetune.weights.h5", mnist),
        "scratch": test("mnist", "scratch.weights.h5", mnist),
    }
    curves = {
        "transfer": read_curve(args.logs / "frozen_head") + read_curve(args.logs / "finetune"),
        "scratch": read_curve(args.logs / "scratch"),
    }
    seconds = {stage: read_summary(args.logs / stage)["train_seconds"] for stage in ("frozen_head", "finetune")}
    seconds = {"transfer": sum(seconds.values()), "scratch": read_summary(args.logs / "scratch")["train_seconds"]}
    for run_name in curves:
        write_confusion(args.plots_out, run_name, mnist["y_test"], results[run_name]["predicted"])
    write_curves(args.plots_out, curves)
    plot_accuracy_png(
        args.plots_out / ACCURACY_PNG, curves, params.frozen_head.epochs + 0.5,
        f"MNIST validation accuracy (test: transfer {results['transfer']['test_accuracy']:.4f}, "
        f"scratch {results['scratch']['test_accuracy']:.4f})",
    )

    metrics = compare_metrics(results, curves, seconds, params.compare.threshold)
    write_json(args.metrics_out, metrics)


if __name__ == "__main__":
    run(main)
