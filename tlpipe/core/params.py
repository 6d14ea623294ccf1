"""params.yaml -> typed, validated objects: one schema shared by every stage.

The schema is a tree of pydantic models: a key is one typed line, its rules live in its type (`Count`, `Fraction`,
`Schedule`, ...), and rules across keys are model validators. `load_params` reports pydantic's first error (an
unknown key's first) as the pipeline's one line: the file, the dotted key and pydantic's message.
"""

import difflib
import functools
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from tlpipe.core.errors import PipelineError

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def _number(value: object) -> object:
    """YAML reads 1e-4 (no dot) as a string; accept what Python reads as a number."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _rule(ok: Callable[[Any], object], message: str) -> AfterValidator:
    """A check on one value; the message follows its dotted key ("must ...")."""

    def check(value):
        if not ok(value):
            raise PydanticCustomError("rule", message)
        return value

    return AfterValidator(check)


def _unique(values: list) -> bool:
    return len(set(values)) == len(values)


# Value types: strict (ints reject bools and floats, bools and strings must be exactly that), numbers accept ints
# and must be finite (YAML reads .inf and .nan as floats).
Number = Annotated[float, BeforeValidator(_number), Field(allow_inf_nan=False)]
Count = Annotated[int, Field(ge=1)]
NonNegative = Annotated[int, Field(ge=0)]
Positive = Annotated[Number, Field(gt=0)]
Fraction = Annotated[Number, Field(gt=0, lt=1)]  # (0, 1)
Share = Annotated[Number, Field(ge=0, lt=1)]  # [0, 1)
Key = Annotated[str, BeforeValidator(str)]  # mapping keys: YAML may read `2024:` as a number
Sha256 = Annotated[str, _rule(_SHA256.match, "must be 64 lowercase hex digits")]
LayerNames = Annotated[
    list[str], _rule(bool, "must name at least one layer"), _rule(_unique, "lists a layer twice")
]
Url = Annotated[str, _rule(lambda url: url.startswith("https://"), "must be an https:// address (the payloads are "
                          "pinned, but over plain http anyone on the way chooses the bytes)")]
Schedule = Literal["constant", "cosine"]  # constant, or cosine decay to 0 over the phase
Source = Literal["fashion_mnist", "mnist"]  # the pretraining dataset (data/<source>.npz)
Preprocess = Literal["mnist", "resize"]  # a folder target's images: into MNIST's form, or grayscale and resized

SCHEDULES = typing.get_args(Schedule)
# The sweep's runs: the three the tutorial compares, then the controls that say why (docs/data-efficiency.md).
SWEEP_RUNS = ("transfer", "frozen", "scratch", "adabn", "random_frozen", "depth1", "depth2", "depth3")


class _Section(BaseModel):
    """Every key required, none unknown, no coercion beyond int -> float; read-only once loaded.

    Cross-key rules raise PydanticCustomError naming keys of their section (the message follows the section's name).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Base(_Section):
    seed: NonNegative
    batch_size: Count
    val_size: Count
    image_size: Count
    min_steps: Count  # every training phase takes at least this many optimizer steps (small datasets)
    # TensorFlow's op determinism (bit-identical reruns); false only where a GPU op has no deterministic kernel
    deterministic: bool


class Download(_Section):
    timeout_s: Positive
    retries: Count
    backoff_s: Annotated[Number, Field(ge=0)]
    dirs: dict[Key, list[str]]
    urls: dict[Key, list[Url]]
    sha256: dict[Key, dict[Key, Sha256]]


class Model(_Section):
    conv_filters: Annotated[list[Count], _rule(lambda v: len(v) == 3, "must list 3 filter counts (3 conv blocks)")]
    kernel_size: Count
    pretrain_dense: Count
    head_dense: Count
    dropout: Share
    bn_momentum: Fraction


class Train(_Section):
    """One training phase: its budget, optimizer schedule, loss and augmentation."""

    epochs: Count
    lr: Positive
    schedule: Schedule
    warmup: Share  # share of the phase's steps warming up linearly from 0 to lr (cosine only)
    label_smoothing: Share
    # random shifts of up to this many pixels (pad and crop), training batches only
    shift: int = Field(ge=0, le=8)

    @model_validator(mode="after")
    def _warmup_needs_cosine(self) -> Self:
        if self.warmup and self.schedule != "cosine":
            raise PydanticCustomError("rule", "warmup needs schedule: cosine")
        return self


class Pretrain(Train):
    source: Source
    batch_size: Count  # pretrain's own; fine-tuning and scratch train in batches of base.batch_size
    flip: bool  # random horizontal flips (Fashion-MNIST's clothes are left-right symmetric; digits are not)


class Target(_Section):
    """What the transfer and scratch models learn: a dataset file of the download stage, or a folder of class
    folders (tlpipe.apps.folder)."""

    path: Annotated[str, _rule(lambda v: v.strip() != "", "must name data/mnist.npz or a folder of class folders")]
    preprocess: Preprocess
    val_fraction: Fraction  # folder: of each class's training images, at least one
    test_fraction: Fraction  # folder without test/: of each class's images, at least one


class Transfer(_Section):
    layers: LayerNames
    freeze: LayerNames

    @model_validator(mode="after")
    def _freeze_only_transferred(self) -> Self:
        # A frozen layer that was not transferred stays at its random init: the new head, say, would then train
        # nothing at all.
        fresh = [name for name in self.freeze if name not in self.layers]
        if fresh:
            raise PydanticCustomError(
                "rule", f"freeze names '{fresh[0]}', a layer not in layers; only transferred layers can be "
                "frozen (a frozen new layer stays random, and a frozen head trains nothing)"
            )
        return self


class FrozenHead(Train):
    batch_size: Count  # the head's own (fine-tuning and scratch train in batches of base.batch_size)


class Finetune(Train):
    bn_inference: bool


class Compare(_Section):
    threshold: Annotated[Number, Field(gt=0, le=1)]


class Sweep(_Section):
    """The label-budget sweep: which points exist, how each is split, and the budget rule every run follows."""

    budgets: Annotated[list[Count], _rule(_unique, "lists a value twice")]
    per_class: bool  # budgets count labels per class (false: labelled images in all)
    seeds: Annotated[list[NonNegative], _rule(_unique, "lists a value twice")]
    val_fraction: Fraction
    val_max: Count
    batch_size: Count
    steps: Count
    min_epochs: Annotated[Number, Field(ge=0)]
    eval_every: Count
    head_fraction: Fraction
    head_lr: Positive
    lr: Positive
    schedule: Schedule
    bn_momentum: Fraction
    margin: Annotated[Number, Field(gt=0, lt=1)]
    converge: Fraction

    @model_validator(mode="after")
    def _not_empty(self) -> Self:
        if not self.budgets or not self.seeds:
            raise PydanticCustomError("rule", "budgets and seeds must each list at least one value")
        small = [b for b in self.budgets if b < 20]
        if small and not self.per_class:  # room for a validation split and a training set
            raise PydanticCustomError("rule", f"budgets has {small[0]}; a budget of labelled images in all must be "
                                      ">= 20 (or set per_class: true to count labels per class)")
        return self


class Params(_Section):
    base: Base
    download: Download
    model: Model
    pretrain: Pretrain
    transfer: Transfer
    frozen_head: FrozenHead
    finetune: Finetune
    scratch: Train
    target: Target
    compare: Compare
    sweep: Sweep


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml; raise PipelineError naming the file and key on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise PipelineError(f"{path}: cannot read ({e.strerror}); run from the repository root") from e
    raw = read_yaml(text, path)
    try:
        return Params.model_validate(raw)
    except ValidationError as e:
        raise PipelineError(_explain(e, path)) from None


def _explain(e: ValidationError, path: Path) -> str:
    """pydantic's first error as one line, `<path>: <dotted.key>: <pydantic's message> (got <value>)`; an unknown
    key's first (a renamed key is unknown and missing: the unknown one says more), with the closest known key."""
    error = min(e.errors(include_url=False), key=lambda err: err["type"] != "extra_forbidden")
    *parents, name = error["loc"] or ("",)
    key = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in error["loc"]).lstrip(".")
    detail = "" if isinstance(error["input"], dict | list) else f" (got {error['input']!r})"
    if error["type"] == "extra_forbidden":  # its section: every part of the loc above it is a section's key
        section = functools.reduce(lambda model, part: model.model_fields[part].annotation, parents, Params)
        close = difflib.get_close_matches(name, list(section.model_fields), n=1, cutoff=0.4)
        detail = f"; did you mean '{'.'.join([*parents, close[0]])}'?" if close else ""
    return f"{path}: {key + ': ' if key else ''}{error['msg']}{detail}"


class _StrictLoader(yaml.SafeLoader):
    """YAML as DVC reads params.yaml, or stricter: no key twice in a mapping (DVC refuses the file; PyYAML would
    keep the last value) and no aliases (`*name`), so that no file expands to more than it spells out."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise PipelineError(f"line {mark.line + 1}: YAML aliases (*name) are not allowed here; write the value out")
        return super().compose_node(parent, index)

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise PipelineError(f"line {line}: merge keys (<<) are not allowed here; write the keys out")
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:
                raise PipelineError(f"line {line}: a key must be a plain value, not a list or mapping") from None
            if key in seen:
                raise PipelineError(f"line {line}: key '{key}' appears twice in one mapping")
            seen.add(key)
        return super().construct_mapping(node, deep)


def read_yaml(text: str, path: str | Path) -> object:
    """Parse a params file with _StrictLoader; any problem is a PipelineError naming `path` and the line."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 (a SafeLoader)
    except PipelineError as e:
        raise PipelineError(f"{path}: {e}") from None
    except yaml.YAMLError as e:
        raise PipelineError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from e


def main() -> None:
    """`python -m tlpipe.core.params [FILE]`: check a params file as the stages will (make repro runs it first)."""
    import sys

    from tlpipe.core.cli import run

    run(lambda: load_params(sys.argv[1] if len(sys.argv) > 1 else "params.yaml"))


if __name__ == "__main__":
    main()
