"""DVCLive set-up shared by the training stages."""

from __future__ import annotations

from dvclive import Live


def open_live(directory: str) -> Live:
    """A DVCLive logger for one stage that never rewrites dvc.yaml or creates experiments itself."""
    return Live(directory, dvcyaml=False, save_dvc_exp=False, report=None)


def log_train_seconds(live: Live, seconds: float) -> None:
    """Record a stage's training wall time in its DVCLive summary (metrics.json)."""
    live.summary["train_seconds"] = round(seconds, 2)
    live.make_summary()
