"""The charts: one colour per run in every chart (the PNGs of compare and data_efficiency, and .dvc/plots/*.json
(Vega)), and one way to draw and save a figure (matplotlib's Agg backend, chosen here; written atomically)."""

from __future__ import annotations

from pathlib import Path

from tlpipe.core.io import atomic_path

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
