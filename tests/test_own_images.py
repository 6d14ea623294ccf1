"""End to end on a folder of one's own images: `dvc repro` with target.path at class folders and MNIST as source."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support import copy_tiny_project, dvc_env, set_param, write_image_folder

CLASSES = ["circle one", "línea", "zed"]  # a space and a non-ASCII letter: names travel as they are spelled


def sh(cwd: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    assert result.returncode == 0, f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def ran(output: str) -> list[str]:
    return sorted(line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage"))


@pytest.fixture(scope="module")
def own(tmp_path_factory, mirror):
    """A tiny project whose target is a folder `images/` (3 classes, a test/ folder), pretrained on MNIST, with a
    sweep in labels per class (one seed); after one `dvc repro`."""
    root = tmp_path_factory.mktemp("own")
    copy_tiny_project(root, mirror[1])
    write_image_folder(root / "images", dict.fromkeys(CLASSES, 8))
    write_image_folder(root / "images" / "test", dict.fromkeys(CLASSES, 3), seed=9)
    params = root / "params.yaml"
    for key, value in (("target.path", "images"), ("pretrain.source", "mnist"), ("sweep.per_class", True),
                       ("sweep.budgets", [1, 3]), ("sweep.seeds", [0])):
        set_param(params, key, value)
    env = dvc_env(mirror[0]) | {"PYTHONPATH": str(root)}
    sh(root, "git", "init", "-q", env=env)
    sh(root, "git", "add", "-A", env=env)
    sh(root, "git", "commit", "-qm", "own images", env=env)
    sh(root, "dvc", "repro", env=env)
    return root, env


def test_every_target_stage_runs_on_the_folder(own):
    root, _ = own
    report = json.loads((root / "metrics/prepare.json").read_text())
    assert list(report["images"]) == CLASSES
    assert [c["test"] for c in report["images"].values()] == [3, 3, 3]
    assert all(c["val"] >= 1 and c["train"] >= 1 for c in report["images"].values())
    metrics = json.loads((root / "metrics/compare.json").read_text())
    assert all(0 <= metrics[run]["test_accuracy"] <= 1 for run in ("frozen_head", "transfer", "scratch"))
    assert "zero_shot" not in metrics  # the classes are not digits: MNIST's head has no answer for them
    with (root / "metrics/plots/transfer_confusion.csv").open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 9 and {r["actual"] for r in rows} == set(CLASSES) >= {r["predicted"] for r in rows}
    with zipfile.ZipFile(root / "models/transfer.keras") as archive:
        assert json.loads(archive.read("metadata.json"))["classes"] == CLASSES
    with zipfile.ZipFile(root / "models/source.keras") as archive:  # pretrained on MNIST: the digits
        assert json.loads(archive.read("metadata.json"))["classes"] == [str(d) for d in range(10)]
    efficiency = json.loads((root / "metrics/data_efficiency.json").read_text())
    assert efficiency["per_class"] is True and set(efficiency["scratch"]) == {"1", "3"}
    record = json.loads((root / "metrics/sweep/seed-0/transfer-3-0.json").read_text())
    assert (record["labels_per_class"], record["n_train"], record["n_val"]) == (3, 6, 3)
    record = json.loads((root / "metrics/sweep/seed-0/frozen-1-0.json").read_text())
    assert (record["n_train"], record["n_val"], record["selected"]["val_accuracy"]) == (3, 0, None)


def test_predict_prints_the_folders_class_names(own):
    root, env = own
    image = root / "images" / "test" / "zed" / "zed-0.png"
    result = subprocess.run([sys.executable, "-m", "tlpipe.apps.predict", "--json", "--model", "models/transfer.keras",
                             str(image)], cwd=root, env=env | {"PYTHONPATH": str(root)}, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1])["class"] in CLASSES


def test_a_change_to_the_folder_reruns_what_it_affects_and_nothing_else(own):
    root, env = own
    assert "up to date" in sh(root, "dvc", "status", env=env).stdout
    extra = root / "images" / "zed" / "zed-extra.png"
    extra.write_bytes((root / "images" / "test" / "zed" / "zed-1.png").read_bytes())  # refused: it is in test/
    try:
        status = json.loads(sh(root, "dvc", "status", "--json", env=env).stdout)
        assert set(status) == {"prepare"}  # the folder is prepare's dependency alone
        failed = subprocess.run(["dvc", "repro"], cwd=root, env=env, capture_output=True, text=True)
        assert failed.returncode != 0 and "in test/ and training" in failed.stderr + failed.stdout
    finally:
        extra.unlink()
    write_image_folder(root / "new", {"zed": 1}, seed=42)
    os.replace(root / "new" / "zed" / "zed-0.png", extra)
    assert ran(sh(root, "dvc", "repro", "prepare", env=env).stdout) == ["prepare"]
    # a new data/target.npz: what reads it is stale (DVC runs it next), the source's stages are not
    stale = set(json.loads(sh(root, "dvc", "status", "--json", env=env).stdout))
    assert {"frozen_head", "finetune", "scratch", "compare", "export", "sweep@0"} <= stale
    assert not {"download", "prepare", "pretrain"} & stale
