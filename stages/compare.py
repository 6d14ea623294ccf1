"""compare: evaluate every model once on its test set and compare transfer with scratch.

Reads data/target.npz, the source dataset (data/<pretrain.source>.npz), models/*.named.h5, the DVCLive logs in
metrics/logs/ and params base.*, model.*, frozen_head.epochs, pretrain.source, compare.*.
Writes metrics/compare.json (with McNemar's test of transfer against scratch, and the source model on the target
as it is, `zero_shot`, when the target's classes are source classes) and metrics/plots/ (validation curves,
confusion pairs, accuracy.png).
Run alone: dvc repro compare
"""

import argparse
from pathlib import Path

from tlpipe.core.cli import run
from tlpipe.core.data import CLASS_NAMES, NUM_CLASSES, load_npz
from tlpipe.core.io import write_json
from tlpipe.core.live import measured, read_curve, read_summary
from tlpipe.core.model import build_model
from tlpipe.core.params import load_params
from tlpipe.core.target import load_target
from tlpipe.core.train import make_deterministic
from tlpipe.core.transfer import load_weights
from tlpipe.report.compare import (
    ACCURACY_PNG,
    compare_metrics,
    evaluate,
    mcnemar,
    source_labels,
    write_confusion,
    write_curves,
)
from tlpipe.report.figures import plot_accuracy_png


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("target", "source_data", "source_weights", "frozen_head_weights", "finetune_weights",
                 "scratch_weights", "logs", "metrics_out", "plots_out"):
        parser.add_argument(f"--{name.replace('_', '-')}", type=Path, required=True)
    args = parser.parse_args()
    params = load_params()
    make_deterministic(params.base.seed, params.base.deterministic)
    target, source = load_target(args.target), load_npz(args.source_data)

    def test(role: str, weights: Path, arrays: dict, classes: int) -> dict:
        model = build_model(role, params.model, params.base.image_size, classes)
        load_weights(model, weights)
        return evaluate(model, arrays["x_test"], arrays["y_test"], params.base.batch_size)

    tested = target.arrays()
    results = {
        "pretrain": test("source", args.source_weights, source, NUM_CLASSES),
        "frozen_head": test("target", args.frozen_head_weights, tested, len(target.classes)),
        "transfer": test("target", args.finetune_weights, tested, len(target.classes)),
        "scratch": test("target", args.scratch_weights, tested, len(target.classes)),
    }
    as_source = source_labels(target.y_test, target.classes, CLASS_NAMES[params.pretrain.source])
    if as_source is not None:  # digits to digits: the source model as it is, zero-shot
        results["zero_shot"] = test("source", args.source_weights, {"x_test": target.x_test, "y_test": as_source},
                                    NUM_CLASSES)
    curves = {
        "transfer": read_curve(args.logs / "frozen_head") + read_curve(args.logs / "finetune"),
        "scratch": read_curve(args.logs / "scratch"),
    }
    seconds = {run: sum(read_summary(args.logs / stage)["train_seconds"] for stage in stages)
               for run, stages in (("transfer", ("frozen_head", "finetune")), ("scratch", ("scratch",)))}
    for run_name in curves:
        write_confusion(args.plots_out, run_name, target.y_test, results[run_name]["predicted"], target.classes)
    write_curves(args.plots_out, curves)
    plot_accuracy_png(
        args.plots_out / ACCURACY_PNG, curves, params.frozen_head.epochs + 0.5,
        f"{Path(params.target.path).stem} validation accuracy (test: transfer "
        f"{results['transfer']['test_accuracy']:.4f}, scratch {results['scratch']['test_accuracy']:.4f})",
    )

    metrics = compare_metrics(results, curves, seconds, params.compare.threshold)
    # a paired test on the same test images: is transfer's accuracy different from scratch's?
    test = mcnemar(target.y_test, results["transfer"]["predicted"], results["scratch"]["predicted"])
    metrics["mcnemar"] = {"transfer_only_correct": test["a_only_correct"],
                          "scratch_only_correct": test["b_only_correct"], "p_value": test["p_value"]}
    # where and when the models were trained (the docs' tables say it)
    metrics |= measured([read_summary(args.logs / stage) for stage in ("frozen_head", "finetune", "scratch")])
    write_json(args.metrics_out, metrics)


if __name__ == "__main__":
    run(main)
