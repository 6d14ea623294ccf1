"""The figures: one colour per run in every chart (the PNGs of compare and data_efficiency, and .dvc/plots/*.json
(Vega)), one way to draw and save a figure (matplotlib's Agg backend, chosen here; written atomically), and the
charts themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tlpipe.core.io import atomic_path
from tlpipe.core.params import SWEEP_RUNS

RUN_COLORS = {"transfer": "#1f77b4", "frozen": "#ff7f0e", "scratch": "#2ca02c", "adabn": "#d62728",
              "random_frozen": "#7f7f7f", "depth1": "#c5b0d5", "depth2": "#9467bd", "depth3": "#5b2d8e"}


def pyplot():
    """matplotlib.pyplot on the Agg backend: PNG files, no display (imported here, where a chart is drawn)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(path: str | Path, fig) -> None:
    """Lay `fig` out (tight), write it to `path` as a PNG atomically and close it."""
    try:
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        pyplot().close(fig)


def gain_rows(summary: dict) -> list[dict]:
    """Long-format rows of every run's gain over scratch (labels, run, mean, 95 % interval, the equivalence band
    and the verdict), for the DVC plot."""
    margin = summary["margin"]
    return [
        {"labels": int(budget), "run": run, "mean": s["mean"], "ci95_low": s["ci95_low"], "ci95_high": s["ci95_high"],
         "band_low": -margin, "band_high": margin, "verdict": s["verdict"]}
        for run in summary["runs"] if f"{run}_minus_scratch" in summary
        for budget, s in summary[f"{run}_minus_scratch"].items()
    ]


def plot_accuracy_png(path: Path, curves: dict[str, list[dict]], boundary: float, title: str) -> None:
    """Validation accuracy per epoch for every run, in full and zoomed on the last epochs, boundary marked."""
    fig, axes = pyplot().subplots(1, 2, figsize=(11, 4.2), dpi=120)
    late = [r["val_accuracy"] for rows in curves.values() for r in rows if r["epoch"] > boundary]
    for ax, zoom in zip(axes, (False, True), strict=True):
        for run, rows in curves.items():
            ax.plot([r["epoch"] for r in rows], [r["val_accuracy"] for r in rows], marker="o", label=run,
                    color=RUN_COLORS[run])
        ax.axvline(boundary, color="grey", linestyle="--", linewidth=1)
        ax.text(boundary, 1.01, "frozen head | fine-tune", transform=ax.get_xaxis_transform(), ha="center",
                fontsize=8, color="grey")
        if zoom and late:
            low = min(late)
            ax.set_ylim(low - 0.25 * (1 - low), 1.0)
        ax.set_xlabel("target epoch")
        ax.set_ylabel("validation accuracy" + (" (zoomed)" if zoom else ""))
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right")
    fig.suptitle(title)
    save_figure(path, fig)


def plot_png(path: Path, summary: dict) -> None:
    """Test accuracy against labels (log x), one line per run, 95 % intervals as error bars.

    Without intervals (one seed) the lines are means only, with no error bars, and the title says so.
    """
    fig, ax = pyplot().subplots(figsize=(7, 4.5), dpi=120)
    intervals = True
    for run in SWEEP_RUNS:
        if run in summary:
            budgets = sorted(int(b) for b in summary[run])
            intervals &= _errorbars(ax, budgets, [summary[run][str(b)] for b in budgets], run, capsize=4)
    _label_budgets(ax, summary)
    ax.set_ylabel("test accuracy")
    ax.set_title("Data efficiency: mean over seeds, 95 % t-interval" if intervals
                 else "Data efficiency: one seed, means only (no intervals)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    save_figure(path, fig)


def plot_gain(path: Path, summary: dict, title: str) -> None:
    """Every run's gain in test accuracy over scratch against labels (log x): mean over seeds with 95 % intervals,
    a zero line and the equivalence band (sweep.margin)."""
    rows = gain_rows(summary)
    runs = [run for run in summary["runs"] if any(r["run"] == run for r in rows)]
    fig, ax = pyplot().subplots(figsize=(8, 4.8), dpi=120)
    margin = summary["margin"]
    ax.axhspan(-margin, margin, color="grey", alpha=0.18, label=f"equivalence band, +-{margin * 100:g} points")
    ax.axhline(0, color="black", linewidth=1)
    for i, run in enumerate(runs):
        mine = sorted((r for r in rows if r["run"] == run), key=lambda r: r["labels"])
        x = np.array([r["labels"] for r in mine]) * 1.06 ** (i - (len(runs) - 1) / 2)  # side by side, not on top
        _errorbars(ax, x, mine, run, capsize=3)
    _label_budgets(ax, summary)
    ax.set_ylabel("test accuracy minus scratch's (same labels, same seed)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    save_figure(path, fig)


def _errorbars(ax, x, rows: list[dict], run: str, capsize: int) -> bool:
    """`rows`' means against `x` with their 95 % intervals as error bars; a plain line when any has no interval
    (one seed). Whether it drew the intervals."""
    mean = np.array([r["mean"] for r in rows])
    if any(r["ci95_low"] is None or r["ci95_high"] is None for r in rows):
        ax.plot(x, mean, marker="o", label=run, color=RUN_COLORS[run])
        return False
    err = [mean - np.array([r["ci95_low"] for r in rows]), np.array([r["ci95_high"] for r in rows]) - mean]
    ax.errorbar(x, mean, yerr=err, marker="o", capsize=capsize, label=run, color=RUN_COLORS[run])
    return True


def _label_budgets(ax, summary: dict) -> None:
    ax.set_xscale("log")
    ax.set_xlabel("labels per class" if summary.get("per_class") else
                  "labelled training images (validation split included)")


def plot_convergence(path: Path, rows: list[dict]) -> None:
    """Validation accuracy against optimizer steps, one panel per budget, transfer and scratch (curve_rows)."""
    budgets = sorted({r["labels"] for r in rows})
    fig, axes = pyplot().subplots(1, max(1, len(budgets)), figsize=(2.6 * max(1, len(budgets)), 3.2), dpi=120,
                             sharex=True, squeeze=False)
    for ax, budget in zip(axes[0], budgets, strict=False):
        for run in sorted({r["run"] for r in rows}):
            mine = [r for r in rows if r["labels"] == budget and r["run"] == run]
            steps = [r["step"] for r in mine]
            ax.plot(steps, [r["mean"] for r in mine], marker=".", label=run, color=RUN_COLORS[run])
            if all(r["ci95_low"] is not None for r in mine):
                ax.fill_between(steps, [r["ci95_low"] for r in mine], [r["ci95_high"] for r in mine],
                                color=RUN_COLORS[run], alpha=0.2)
        ax.set_title(f"{budget} labels", fontsize=9)
        ax.set_xlabel("optimizer step")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("validation accuracy")
    axes[0][0].legend(fontsize=8)
    save_figure(path, fig)
