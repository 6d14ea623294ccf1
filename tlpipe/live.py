"""DVCLive set-up shared by the training stages, and reading its logs back."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from dvclive import Live
from dvclive.utils import standardize_metric_name

from tlpipe.errors import PipelineError


def open_live(directory: str | Path) -> Live:
    """A DVCLive logger for one stage that never rewrites dvc.yaml or creates experiments itself."""
    return Live(str(directory), dvcyaml=False, save_dvc_exp=False, report=None)


def log_run(live: Live, seconds: float, devices: dict[str, str]) -> None:
    """Record a stage's training wall time and the devices it trained on in its DVCLive summary (metrics.json)."""
    live.summary["train_seconds"] = round(seconds, 2)
    live.summary["devices"] = devices
    live.make_summary()


def read_summary(directory: Path) -> dict:
    """A stage's DVCLive summary (metrics.json)."""
    path = directory / "metrics.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise PipelineError(f"{path}: missing or unreadable; re-run the stage that logs there") from e


def metric_name(key: str) -> str:
    """Where DVCLive's Keras callback logs a Keras metric: val_accuracy -> eval/accuracy, loss -> train/loss."""
    return standardize_metric_name(key, "dvclive.keras")


def read_curve(directory: Path, keys: tuple[str, ...] = ("val_accuracy", "val_loss")) -> list[dict]:
    """Per-epoch rows {epoch, key...} from a stage's DVCLive metric files (step = epoch number)."""
    columns = {}
    for key in keys:
        name = metric_name(key)
        path = directory / "plots" / "metrics" / f"{name}.tsv"
        column = name.split("/")[-1]
        try:
            with path.open(encoding="utf-8", newline="") as f:
                columns[key] = {int(row["step"]): float(row[column]) for row in csv.DictReader(f, delimiter="\t")}
        except (OSError, KeyError, ValueError) as e:
            raise PipelineError(f"{path}: missing or unreadable; re-run the stage that logs there") from e
    epochs = sorted(columns[keys[0]])
    return [{"epoch": epoch, **{key: columns[key][epoch] for key in keys}} for epoch in epochs]
