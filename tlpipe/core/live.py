"""DVCLive set-up shared by the training stages, and reading its logs back."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from dvclive import Live
from dvclive.utils import standardize_metric_name

from tlpipe.core.errors import PipelineError


def open_live(directory: str | Path) -> Live:
    """A DVCLive logger for one stage that never rewrites dvc.yaml or creates experiments itself."""
    return Live(str(directory), dvcyaml=False, save_dvc_exp=False, report=None)


def utc_date() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def measured(records: list[dict]) -> dict:
    """Where and when runs were measured, from their records' `devices` and `date`: {"machine", "date"}."""
    machines = sorted({name for record in records for name in record.get("devices", {}).values()})
    dates = sorted(record["date"] for record in records if record.get("date"))
    return {"machine": ", ".join(machines) or None, "date": dates[-1] if dates else None}


def log_run(live: Live, seconds: float, devices: dict[str, str]) -> None:
    """Record a stage's training wall time, the devices it trained on and the date in its DVCLive summary
    (metrics.json)."""
    live.summary["train_seconds"] = round(seconds, 2)
    live.summary["devices"] = devices
    live.summary["date"] = utc_date()
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
