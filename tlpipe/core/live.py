"""DVCLive set-up shared by the training stages, reading its logs back, and where runs are measured (the CPU).

DVCLive is imported where it is used: benchmarks/time_command.py reads the CPU with Python alone (no .venv).
"""

from __future__ import annotations

import csv
import json
import platform
import time
from pathlib import Path
from typing import TYPE_CHECKING

from tlpipe.core.errors import PipelineError

if TYPE_CHECKING:
    from dvclive import Live


def open_live(directory: str | Path) -> Live:
    """A DVCLive logger for one stage that never rewrites dvc.yaml or creates experiments itself."""
    from dvclive import Live

    return Live(str(directory), dvcyaml=False, save_dvc_exp=False, report=None)


def utc_date() -> str:
    return time.strftime("%Y-%m-%d", time.gmtime())


def cpuinfo() -> dict[str, str]:
    """/proc/cpuinfo as {field: its first value} ("model name", "flags", ...); {} where there is none (not Linux)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    """This machine's CPU model, e.g. 'AMD EPYC 7B13' (/proc/cpuinfo's model name, else what `platform` says)."""
    return cpuinfo().get("model name") or platform.processor() or platform.machine()


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
    from dvclive.utils import standardize_metric_name

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
