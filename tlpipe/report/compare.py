"""The comparison: test-set evaluation, curves, confusion data, the metrics JSON and a PNG for people."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.stats import binomtest

from tlpipe.core.io import to_csv, write_text
from tlpipe.core.train import evaluate  # noqa: F401  (re-exported: compare and the tests import it from here)

# Files written into the plots folder; dvc.yaml's top-level `plots:` names the same files.
CURVES_CSV = "curves.csv"
CONFUSION_CSV = "{run}_confusion.csv"
ACCURACY_PNG = "accuracy.png"


def epochs_to_threshold(curve: list[dict], threshold: float) -> int | None:
    """First epoch whose validation accuracy reaches `threshold`; None if none does."""
    return next((row["epoch"] for row in curve if row["val_accuracy"] >= threshold), None)


def mcnemar(actual: np.ndarray, a: np.ndarray, b: np.ndarray) -> dict:
    """McNemar's exact test of two models' predictions `a` and `b` on the same test images: only the images one
    gets right and the other wrong count; under "equally accurate" each is a fair coin (two-sided binomial p)."""
    only_a = int(((a == actual) & (b != actual)).sum())
    only_b = int(((b == actual) & (a != actual)).sum())
    n = only_a + only_b
    p = binomtest(min(only_a, only_b), n, 0.5).pvalue if n else 1.0  # no disagreement: no evidence either way
    return {"a_only_correct": only_a, "b_only_correct": only_b, "p_value": float(f"{p:.4g}")}


def source_labels(y: np.ndarray, classes: list[str], source_classes: list[str]) -> np.ndarray | None:
    """Target labels `y` as the source head's class indices, when every target class is a source class by name
    (digits to digits): the source model can then be scored on the target as it is (zero-shot); else None."""
    if not set(classes) <= set(source_classes):
        return None
    return np.array([source_classes.index(name) for name in classes], np.int64)[y.astype(np.int64)]


def compare_metrics(
    results: dict[str, dict], curves: dict[str, list[dict]], seconds: dict[str, float], threshold: float
) -> dict:
    """The compare.json content: test numbers per model, gain, epochs to threshold and training time per run."""
    metrics = {
        "pretrain": {"test_accuracy": results["pretrain"]["test_accuracy"]},
        "frozen_head": {"test_accuracy": results["frozen_head"]["test_accuracy"]},
        "gain": {"test_accuracy": round(results["transfer"]["test_accuracy"] - results["scratch"]["test_accuracy"], 6)},
        "threshold": threshold,
    }
    if "zero_shot" in results:  # the source model on the target test set as it is, its own head unchanged
        metrics["zero_shot"] = {"test_accuracy": results["zero_shot"]["test_accuracy"]}
    for run, curve in curves.items():
        metrics[run] = {
            "test_accuracy": results[run]["test_accuracy"],
            "test_loss": results[run]["test_loss"],
            "epochs_to_threshold": epochs_to_threshold(curve, threshold),
            "best_val_accuracy": round(max(row["val_accuracy"] for row in curve), 6),
            "train_seconds": round(seconds[run], 2),
        }
    return metrics


def write_curves(plots: Path, curves: dict[str, list[dict]]) -> None:
    """One long-format CSV (epoch, run, val_accuracy, val_loss); dvc.yaml colours it by run (.dvc/plots/runs.json)."""
    rows = [{"epoch": row["epoch"], "run": run} | {k: round(v, 6) for k, v in row.items() if k != "epoch"}
            for run, run_rows in curves.items() for row in run_rows]
    write_text(plots / CURVES_CSV, to_csv(rows))


def write_confusion(plots: Path, run: str, actual: np.ndarray, predicted: np.ndarray, classes: list[str]) -> None:
    """Per-image (actual, predicted) pairs of class names, for DVC's `confusion` template."""
    rows = [{"actual": classes[a], "predicted": classes[p]} for a, p in zip(actual, predicted, strict=True)]
    write_text(plots / CONFUSION_CSV.format(run=run), to_csv(rows))
