"""Shared fixtures: a tiny synthetic mirror, tiny params and tiny models (CPU only, seconds)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.support import run_stage, tiny_params, write_mirror  # noqa: E402


@pytest.fixture(scope="session")
def mirror(tmp_path_factory) -> tuple[Path, dict]:
    """A synthetic mirror folder and the payload digests of its files."""
    root = tmp_path_factory.mktemp("mirror")
    return root, write_mirror(root)


@pytest.fixture
def params_file(tmp_path, mirror) -> Path:
    """A valid tiny params.yaml in a temp folder."""
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(tiny_params(mirror[1])))
    return path


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, mirror) -> Path:
    """data/ with mnist.npz and fashion_mnist.npz, written by the download stage from the synthetic mirror, and
    target.npz (MNIST as the target), written by the prepare stage."""
    root = tmp_path_factory.mktemp("data")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(mirror[1])))
    result = run_stage(root, "download", "data", mirror=mirror[0])
    assert result.returncode == 0, result.stderr
    result = run_stage(root, "prepare", "data/target.npz", "metrics/prepare.json")
    assert result.returncode == 0, result.stderr
    return root / "data"
