"""Bad inputs through the real stage entry points: exit 1, one clear line, no traceback, no output left."""

from __future__ import annotations

import gzip
import hashlib
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.support import idx_bytes, run_main, run_stage, set_param, tiny_params


def assert_one_line_error(result: subprocess.CompletedProcess, stage: str, *fragments: str) -> None:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"error: {stage}: ")
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


@pytest.fixture
def workdir(tmp_path, mirror) -> Path:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(mirror[1])))
    return tmp_path


def pin(workdir: Path, file: str, payload: bytes) -> None:
    """Pin a (bad) payload's checksum, to reach the IDX checks behind the checksum check."""
    set_param(workdir / "params.yaml", f"download.sha256.mnist.{file}", hashlib.sha256(payload).hexdigest())


LABELS = "t10k-labels-idx1-ubyte"
IMAGES = "t10k-images-idx3-ubyte"


def payload_case(name):
    """(file stem, .gz bytes, payload to pin or None, expected message fragment)."""
    wrong_magic = b"\x00\x00\x0d\x01" + idx_bytes(np.zeros(100, np.uint8))[4:]
    wrong_dims = idx_bytes(np.zeros((100, 27, 27), np.uint8))
    too_few = idx_bytes(np.zeros(99, np.uint8))
    bad_label = idx_bytes(np.full(100, 12, np.uint8))
    return {
        "corrupt gzip": (LABELS, b"\x1f\x8b\x08\x00garbage-garbage", None, "not a valid gzip file"),
        "truncated gzip": (IMAGES, None, None, "not a valid gzip file"),
        "checksum mismatch": (LABELS, gzip.compress(idx_bytes(np.ones(100, np.uint8))), None, "does not match"),
        "wrong magic": (LABELS, gzip.compress(wrong_magic), wrong_magic, "wrong IDX magic"),
        "wrong dimensions": (IMAGES, gzip.compress(wrong_dims), wrong_dims, "images are (27, 27), expected (28, 28)"),
        "count mismatch": (LABELS, gzip.compress(too_few), too_few, "100 test images but 99 test labels"),
        "label out of range": (LABELS, gzip.compress(bad_label), bad_label, "test label 12 is outside 0-9"),
        "missing file": (LABELS, "delete", None, "No such file or directory"),
        "empty file": (LABELS, b"", None, "empty file"),
    }[name]


CASES = ["corrupt gzip", "truncated gzip", "checksum mismatch", "wrong magic", "wrong dimensions",
         "count mismatch", "label out of range", "missing file", "empty file"]


@pytest.mark.parametrize("case", CASES)
def test_bad_dataset(workdir, mirror, case):
    stem, content, pinned, message = payload_case(case)
    bad = workdir / "mirror"
    shutil.copytree(mirror[0], bad)
    target = bad / "mnist" / f"{stem}.gz"
    if content == "delete":
        target.unlink()
    elif content is None:  # truncate the good file
        target.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    else:
        target.write_bytes(content)
    if pinned is not None:
        pin(workdir, stem, pinned)
    result = run_stage(workdir, "download", "data", mirror=bad)
    assert_one_line_error(result, "download", "could not get mnist from any source", message, "DATA_MIRROR")
    assert not (workdir / "data").exists() or not any((workdir / "data").iterdir())


def test_no_source_at_all(workdir):
    result = run_stage(workdir, "download", "data", mirror=None)
    assert_one_line_error(result, "download", "no sources configured", "DATA_MIRROR=../shared/datasets")


@pytest.mark.parametrize(
    ("dotted", "value", "message"),
    [
        ("scratch.lr_rate", 0.1, "scratch.lr_rate: Extra inputs are not permitted; did you mean 'scratch.lr'?"),
        ("scratch.epochs", "ten", "scratch.epochs: Input should be a valid integer"),
        ("scratch.epochs", 0, "scratch.epochs: Input should be greater than or equal to 1"),
        ("scratch.lr", -1, "scratch.lr: Input should be greater than 0"),
        ("base.batch_size", 0, "base.batch_size: Input should be greater than or equal to 1"),
    ],
)
def test_bad_params(workdir, data_dir, dotted, value, message):
    set_param(workdir / "params.yaml", dotted, value)
    result = run_main(workdir, "scratch", str(data_dir / "target.npz"), "models/s.named.h5", "logs/scratch")
    assert_one_line_error(result, "scratch", message)
    assert not (workdir / "models").exists()


def test_a_validation_split_as_large_as_the_training_set_is_refused(workdir, data_dir):
    """The prepare stage splits the target: base.val_size must leave MNIST training images to train on."""
    set_param(workdir / "params.yaml", "base.val_size", 400)
    set_param(workdir / "params.yaml", "target.path", str(data_dir / "mnist.npz"))
    result = run_main(workdir, "prepare", "data/target.npz", "metrics/prepare.json")
    assert_one_line_error(result, "prepare", "base.val_size=400 must be smaller than the 400 training images")
    assert not (workdir / "data").exists() and not (workdir / "metrics").exists()


def test_missing_section(workdir, data_dir):
    set_param(workdir / "params.yaml", "compare", delete=True)
    result = run_main(workdir, "scratch", str(data_dir / "target.npz"), "m.named.h5", "logs")
    assert_one_line_error(result, "scratch", "compare: Field required")


@pytest.mark.parametrize(("key", "names", "message"), [
    ("transfer.layers", ["conv1", "conv_one"], "transfer.layers names 'conv_one'"),
    ("transfer.freeze", ["conv1", "bn_1"], "transfer: freeze names 'bn_1'"),
])
def test_unknown_layer_names(workdir, data_dir, tmp_path, key, names, message):
    fashion = tmp_path / "fashion.named.h5"
    weights_for(tmp_path, "source", fashion)
    set_param(workdir / "params.yaml", key, names)
    if key == "transfer.layers":  # only transferred layers may be frozen
        set_param(workdir / "params.yaml", "transfer.freeze", names[:1])
    result = run_main(workdir, "frozen_head", str(fashion), str(data_dir / "target.npz"),
                       "out.named.h5", "report.json", "logs")
    assert_one_line_error(result, "frozen_head", message)
    assert not (workdir / "out.named.h5").exists() and not (workdir / "report.json").exists()


def weights_for(workdir: Path, role: str, path: Path, filters=(4, 8, 8)) -> None:
    """A weights file of a `role` model built from workdir's params (tiny, from the committed defaults) with
    `filters`."""
    from tlpipe.core.model import build_model
    from tlpipe.core.params import load_params
    from tlpipe.core.transfer import save_weights

    arch = load_params(workdir / "params.yaml").model.model_copy(update={"conv_filters": list(filters)})
    save_weights(build_model(role, arch, 28), path)


@pytest.mark.parametrize(("kind", "message"), [
    ("other architecture", "layer 'conv1' has weight shapes [(3, 3, 1, 6), (6,)] in the file"),
    ("not hdf5", "not a readable HDF5 weights file"),
    ("empty", "weights file is empty"),
    ("missing", "weights file is missing"),
])
def test_bad_weights(workdir, data_dir, kind, message):
    weights = workdir / "frozen_head.named.h5"
    if kind == "other architecture":
        weights_for(workdir, "target", weights, filters=(6, 8, 8))
    elif kind == "not hdf5":
        weights.write_text("definitely not HDF5\n")
    elif kind == "empty":
        weights.write_bytes(b"")
    result = run_main(workdir, "finetune", str(weights), str(data_dir / "target.npz"), "out.named.h5", "logs")
    assert_one_line_error(result, "finetune", message)
    assert not (workdir / "out.named.h5").exists()
