"""params.yaml -> typed, validated objects: one schema shared by every stage."""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import re
import typing
from dataclasses import dataclass
from pathlib import Path

import yaml

from tlpipe.errors import PipelineError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class Base:
    seed: int
    batch_size: int
    val_size: int
    image_size: int

    def check(self, where: str) -> None:
        _at_least(self.batch_size, 1, f"{where}.batch_size")
        _at_least(self.val_size, 1, f"{where}.val_size")
        _at_least(self.seed, 0, f"{where}.seed")
        _at_least(self.image_size, 1, f"{where}.image_size")


@dataclass(frozen=True)
class Download:
    timeout_s: float
    retries: int
    backoff_s: float
    dirs: dict[str, list[str]]
    urls: dict[str, list[str]]
    sha256: dict[str, dict[str, str]]

    def check(self, where: str) -> None:
        _positive(self.timeout_s, f"{where}.timeout_s")
        _at_least(self.retries, 1, f"{where}.retries")
        _at_least(self.backoff_s, 0, f"{where}.backoff_s")
        for dataset, files in self.sha256.items():
            for name, digest in files.items():
                if not _SHA256.match(digest):
                    raise PipelineError(
                        f"params.yaml: {where}.sha256.{dataset}.{name} must be 64 lowercase hex digits"
                    )


@dataclass(frozen=True)
class Model:
    conv_filters: list[int]
    kernel_size: int
    pretrain_dense: int
    head_dense: int
    dropout: float
    bn_momentum: float

    def check(self, where: str) -> None:
        if len(self.conv_filters) != 3:
            raise PipelineError(f"params.yaml: {where}.conv_filters must list 3 filter counts (3 conv blocks)")
        for i, n in enumerate(self.conv_filters):
            _at_least(n, 1, f"{where}.conv_filters[{i}]")
        _at_least(self.kernel_size, 1, f"{where}.kernel_size")
        _at_least(self.pretrain_dense, 1, f"{where}.pretrain_dense")
        _at_least(self.head_dense, 1, f"{where}.head_dense")
        if not 0 <= self.dropout < 1:
            raise PipelineError(f"params.yaml: {where}.dropout must be in [0, 1), got {self.dropout}")
        _fraction(self.bn_momentum, f"{where}.bn_momentum")


@dataclass(frozen=True)
class Train:
    """One training phase: its budget and optimizer."""

    epochs: int
    lr: float
    schedule: str

    def check(self, where: str) -> None:
        _at_least(self.epochs, 1, f"{where}.epochs")
        _positive(self.lr, f"{where}.lr")
        if self.schedule not in SCHEDULES:
            raise PipelineError(
                f"params.yaml: {where}.schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}"
            )


@dataclass(frozen=True)
class Transfer:
    layers: list[str]
    freeze: list[str]

    def check(self, where: str) -> None:
        for key in ("layers", "freeze"):
            names = getattr(self, key)
            if not names:
                raise PipelineError(f"params.yaml: {where}.{key} must name at least one layer")
            if len(set(names)) != len(names):
                raise PipelineError(f"params.yaml: {where}.{key} lists a layer twice")


@dataclass(frozen=True)
class FrozenHead(Train):
    cache_features: bool


@dataclass(frozen=True)
class Finetune(Train):
    bn_inference: bool


@dataclass(frozen=True)
class Compare:
    threshold: float

    def check(self, where: str) -> None:
        if not 0 < self.threshold <= 1:
            raise PipelineError(f"params.yaml: {where}.threshold must be in (0, 1], got {self.threshold}")


SWEEP_RUNS = ("transfer", "frozen", "scratch")


@dataclass(frozen=True)
class Sweep:
    """The label-budget sweep: which points exist, how each is split, and the budget rule every run follows."""

    budgets: list[int]
    seeds: list[int]
    val_fraction: float
    val_max: int
    batch_size: int
    steps: int
    min_epochs: float
    eval_every: int
    head_fraction: float
    head_lr: float
    lr: float
    schedule: str
    bn_momentum: float

    def check(self, where: str) -> None:
        if not self.budgets or not self.seeds:
            raise PipelineError(f"params.yaml: {where}.budgets and {where}.seeds must each list at least one value")
        for key in ("budgets", "seeds"):
            values = getattr(self, key)
            if len(set(values)) != len(values):
                raise PipelineError(f"params.yaml: {where}.{key} lists a value twice")
        for i, budget in enumerate(self.budgets):
            _at_least(budget, 20, f"{where}.budgets[{i}]")  # room for a validation split and a training set
        for i, seed in enumerate(self.seeds):
            _at_least(seed, 0, f"{where}.seeds[{i}]")
        _fraction(self.val_fraction, f"{where}.val_fraction")
        _at_least(self.val_max, 1, f"{where}.val_max")
        _at_least(self.batch_size, 1, f"{where}.batch_size")
        _at_least(self.steps, 1, f"{where}.steps")
        _at_least(self.min_epochs, 0, f"{where}.min_epochs")
        _at_least(self.eval_every, 1, f"{where}.eval_every")
        _fraction(self.head_fraction, f"{where}.head_fraction")
        _fraction(self.bn_momentum, f"{where}.bn_momentum")
        _positive(self.head_lr, f"{where}.head_lr")
        _positive(self.lr, f"{where}.lr")
        if self.schedule not in SCHEDULES:
            raise PipelineError(
                f"params.yaml: {where}.schedule must be one of {list(SCHEDULES)}, got {self.schedule!r}"
            )


@dataclass(frozen=True)
class Params:
    base: Base
    download: Download
    model: Model
    pretrain: Train
    transfer: Transfer
    frozen_head: FrozenHead
    finetune: Finetune
    scratch: Train
    compare: Compare
    sweep: Sweep


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raise PipelineError naming the file and key on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PipelineError(f"{path}: cannot read ({e.strerror}); run from the repository root") from e
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise PipelineError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e
    try:
        return _build(Params, raw, "")
    except PipelineError as e:
        raise PipelineError(str(e).replace("params.yaml", str(path), 1)) from None


def _build(cls: type, raw: object, where: str):
    label = where or "top level"
    if not isinstance(raw, dict):
        raise PipelineError(f"params.yaml: {label} must be a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in raw if k not in names]
    if unknown:
        key = unknown[0]
        close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.4)
        hint = f"; did you mean '{_join(where, close[0])}'?" if close else f"; known keys: {', '.join(names)}"
        raise PipelineError(f"params.yaml: unknown key '{_join(where, key)}'{hint}")
    missing = [n for n in names if n not in raw]
    if missing:
        kind = "section" if not where else "key"
        raise PipelineError(f"params.yaml: missing {kind} '{_join(where, missing[0])}'")
    values = {n: _convert(hints[n], raw[n], _join(where, n)) for n in names}
    obj = cls(**values)
    if hasattr(obj, "check"):
        obj.check(where)
    return obj


def _convert(hint: object, value: object, key: str):
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    origin = typing.get_origin(hint)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise PipelineError(f"params.yaml: {key} must be a list, got {_describe(value)}")
        return [_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(hint)
        if not isinstance(value, dict):
            raise PipelineError(f"params.yaml: {key} must be a mapping, got {_describe(value)}")
        return {str(k): _convert(item, v, f"{key}.{k}") for k, v in value.items()}
    if hint is bool:
        if not isinstance(value, bool):
            raise PipelineError(f"params.yaml: {key} must be true or false, got {_describe(value)}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise PipelineError(f"params.yaml: {key} must be an integer, got {_describe(value)}")
        return value
    if hint is float:
        # YAML reads 1e-4 (no dot) as a string; accept what Python reads as a number.
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                value = float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PipelineError(f"params.yaml: {key} must be a number, got {_describe(value)}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise PipelineError(f"params.yaml: {key} must be a string, got {_describe(value)}")
        return value
    raise TypeError(f"unsupported schema type {hint!r} for {key}")  # a bug in this module, not user input


def _describe(value: object) -> str:
    return f"{value!r} ({type(value).__name__})" if not isinstance(value, dict | list) else type(value).__name__


def _join(where: str, key: object) -> str:
    return f"{where}.{key}" if where else str(key)


def _at_least(value: float, low: float, key: str) -> None:
    if value < low:
        raise PipelineError(f"params.yaml: {key} must be >= {low}, got {value}")


def _fraction(value: float, key: str) -> None:
    if not 0 < value < 1:
        raise PipelineError(f"params.yaml: {key} must be in (0, 1), got {value}")


def _positive(value: float, key: str) -> None:
    if not value > 0:
        raise PipelineError(f"params.yaml: {key} must be > 0, got {value}")

