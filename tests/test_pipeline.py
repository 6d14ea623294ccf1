"""End to end: `dvc repro` in a temporary copy of the repository on tiny synthetic IDX data."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest
import yaml

from tests.support import ROOT, copy_tiny_project, set_param

WEIGHTS = ["source", "frozen_head", "finetune", "scratch"]


def sh(cwd: Path, *args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result


@pytest.fixture(scope="module")
def repo(tmp_path_factory, mirror):
    """A repository copy with tiny params, after one full `dvc repro`."""
    root = tmp_path_factory.mktemp("repo")
    copy_tiny_project(root, mirror[1])
    env = os.environ | {
        "DATA_MIRROR": str(mirror[0]),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(root),
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
    }
    sh(root, "git", "init", "-q")
    sh(root, "git", "add", "-A")
    sh(root, "git", "commit", "-qm", "tiny")  # DVCLive needs a commit to exist
    sh(root, "dvc", "repro", env=env)
    return root, env


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_every_output_is_written(repo):
    root, _ = repo
    for name in WEIGHTS:
        with h5py.File(root / "models" / f"{name}.named.h5") as f:
            assert f.attrs["format"] == "tlpipe-named-weights"
    for stage in ("pretrain", "frozen_head", "finetune", "scratch"):
        summary = json.loads((root / "metrics/logs" / stage / "metrics.json").read_text())
        assert "train_seconds" in summary
        assert list(summary["devices"]) == ["CPU:0"] and summary["devices"]["CPU:0"]  # no GPU on these machines
    records = list((root / "metrics/sweep").rglob("*.json"))
    assert len(records) == 3 * 2 * 2  # runs x budgets x seeds of the tiny params
    for record in records:
        assert list(json.loads(record.read_text())["devices"]) == ["CPU:0"], record.name
    report = json.loads((root / "metrics/transfer_report.json").read_text())
    assert sorted(report["copied"]) == ["bn1", "bn2", "bn3", "conv1", "conv2", "conv3"]
    assert report["skipped"] == {"target_dense": "not in source", "target_out": "not in source"}
    assert (root / "metrics/plots/accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(root.rglob(".*.tmp*")), "temporary files left behind"


def test_compare_json_schema(repo):
    root, _ = repo
    metrics = json.loads((root / "metrics/compare.json").read_text())
    for run in ("transfer", "scratch"):
        assert set(metrics[run]) >= {"test_accuracy", "test_loss", "epochs_to_threshold", "train_seconds"}
        assert 0 <= metrics[run]["test_accuracy"] <= 1 and metrics[run]["test_loss"] > 0
        assert metrics[run]["train_seconds"] > 0
    for key in ("pretrain", "frozen_head"):
        assert 0 <= metrics[key]["test_accuracy"] <= 1
    gain = metrics["transfer"]["test_accuracy"] - metrics["scratch"]["test_accuracy"]
    assert metrics["gain"]["test_accuracy"] == pytest.approx(gain, abs=1e-6)


def test_curves_and_confusion(repo):
    root, _ = repo
    curves = read_csv(root / "metrics/plots/curves.csv")
    transfer = [r for r in curves if r["run"] == "transfer"]
    scratch = [r for r in curves if r["run"] == "scratch"]
    assert [int(r["epoch"]) for r in transfer] == [1, 2, 3, 4]  # frozen_head 1-2, then finetune 3-4
    assert [int(r["epoch"]) for r in scratch] == [1, 2, 3, 4]
    assert len(curves) == 8 and set(curves[0]) == {"epoch", "run", "val_accuracy", "val_loss"}
    confusion = read_csv(root / "metrics/plots/transfer_confusion.csv")
    assert len(confusion) == 100 and {int(r["actual"]) for r in confusion} == set(range(10))


def test_status_clean_and_plots_render(repo, tmp_path):
    root, env = repo
    assert "up to date" in sh(root, "dvc", "status", env=env).stdout
    sh(root, "dvc", "plots", "show", "-o", str(tmp_path / "plots"), env=env)
    page = (tmp_path / "plots" / "index.html").read_text()
    assert '"run": "transfer", "val_accuracy"' in page and '"run": "scratch", "val_accuracy"' in page  # curves
    assert "confusion" in page
    assert '"domain": ["transfer", "frozen", "scratch"]' in page  # one colour per run (.dvc/plots/runs.json)
    assert '"errorbar"' in page and "labels, sweep.budgets" in page  # the sweep's plot, through its custom template
    assert '"field": "band_low"' in page  # the gain over scratch with its equivalence band (.dvc/plots/gain.json)
    assert "../node_modules/vega/build/vega.min.js" in page and "cdn.jsdelivr" not in page  # renders offline


def test_base_batch_size_is_not_a_param_of_the_phases_with_their_own_batch(repo):
    """pretrain and frozen_head train in batches of their own; only finetune, scratch and compare read
    base.batch_size, so only they (and what follows them) are out of date when it changes."""
    root, env = repo
    original = (root / "params.yaml").read_text()
    set_param(root / "params.yaml", "base.batch_size", 24)
    try:
        changed = json.loads(sh(root, "dvc", "status", "--json", env=env).stdout)
    finally:
        (root / "params.yaml").write_text(original)
    assert {"finetune", "scratch", "compare"} <= set(changed)
    assert not {"pretrain", "frozen_head"} & set(changed)


def test_stage_killed_mid_training_leaves_nothing_and_next_repro_completes(repo):
    root, env = repo
    original = (root / "params.yaml").read_text()
    set_param(root / "params.yaml", "scratch.epochs", 10_000)
    try:
        proc = subprocess.Popen(["dvc", "repro", "scratch"], cwd=root, env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        for line in proc.stdout:
            if line.startswith("Epoch 3/"):
                break
        stage = [p for p in psutil.Process(proc.pid).children(recursive=True) if "stages.scratch" in p.cmdline()]
        assert len(stage) == 1
        stage[0].send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        assert proc.returncode != 0
        assert not (root / "models/scratch.named.h5").exists()
        assert not list(root.rglob(".*.tmp*"))
    finally:
        (root / "params.yaml").write_text(original)
    sh(root, "dvc", "repro", env=env)
    assert "up to date" in sh(root, "dvc", "status", env=env).stdout
    assert (root / "models/scratch.named.h5").exists()


def test_forced_rerun_gives_identical_weights(repo):
    """A forced rerun of a training stage (the transfer's first phase, and scratch) writes the same weights, to the
    bit: seeded init, seeded batches, deterministic ops. Every other stage trains through the same code."""
    root, env = repo

    def weights() -> dict:
        found = {}
        for name in ("frozen_head", "scratch"):
            with h5py.File(root / "models" / f"{name}.named.h5") as f:
                for layer, group in f.items():
                    found |= {f"{name}/{layer}/{i}": group[i][()] for i in group}
        return found

    first = weights()
    out = sh(root, "dvc", "repro", "-f", "--single-item", "frozen_head", "scratch", env=env).stdout
    assert "Running stage 'frozen_head'" in out and "Running stage 'scratch'" in out
    second = weights()
    assert first.keys() == second.keys() and len(first) > 10
    for key, value in first.items():
        np.testing.assert_array_equal(value, second[key], err_msg=key)
    # the same weights: only compare, which reads the new logs' wall times, is stale
    out = sh(root, "dvc", "repro", env=env).stdout
    assert [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")] == ["compare"]


SWEEP_STAGES = {f"sweep@{seed}" for seed in (0, 1)}  # tiny params: 2 seeds (of 2 budgets each)


def test_sweep_matrix_expands_to_one_stage_per_seed(repo):
    root, env = repo
    names = set(sh(root, "dvc", "stage", "list", "--name-only", env=env).stdout.split())
    assert {name for name in names if name.startswith("sweep")} == SWEEP_STAGES
    points = {path.relative_to(root / "metrics/sweep").as_posix() for path in (root / "metrics/sweep").rglob("*.json")}
    assert points == {f"seed-{seed}/{run}-{budget}-{seed}.json" for run in ("transfer", "frozen", "scratch")
                      for budget in (20, 60) for seed in (0, 1)}
    summary = json.loads((root / "metrics/data_efficiency.json").read_text())
    for run in ("transfer", "frozen", "scratch"):
        assert set(summary[run]) == {"20", "60"}
        assert set(summary[run]["60"]["per_seed"]) == {"0", "1"}
    assert set(summary["transfer_minus_scratch"]) == {"20", "60"}
    rows = read_csv(root / "metrics/data_efficiency/accuracy.csv")
    assert len(rows) == 6 and set(rows[0]) == {"labels", "run", "mean", "ci95_low", "ci95_high"}


def test_adding_a_seed_runs_only_the_new_points(repo):
    root, env = repo
    original = (root / "params.yaml").read_text()
    set_param(root / "params.yaml", "sweep.seeds", [0, 1, 2])
    try:
        out = sh(root, "dvc", "repro", "--dry", env=env).stdout
    finally:
        (root / "params.yaml").write_text(original)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"sweep@2", "data_efficiency"}


# Runs in a fresh interpreter that never imports tlpipe: what a user of an exported model has.
SCORE = """
import json, sys
import keras, numpy as np
scores = {}
for model, data in zip(sys.argv[2::2], sys.argv[3::2]):
    arrays = np.load(data)
    probs = keras.models.load_model(model).predict(arrays["x_test"], batch_size=int(sys.argv[1]), verbose=0)
    scores[model] = round(float((probs.argmax(axis=1) == arrays["y_test"]).mean()), 6)
assert not any(m.startswith("tlpipe") for m in sys.modules)
print(json.dumps(scores))
"""


def test_exported_models_score_exactly_what_compare_reports(repo):
    root, _ = repo
    metrics = json.loads((root / "metrics/compare.json").read_text())
    batch = yaml.safe_load((root / "params.yaml").read_text())["base"]["batch_size"]
    pairs = {"transfer": "mnist", "scratch": "mnist", "source": "fashion_mnist"}
    args = [arg for model, data in pairs.items() for arg in (f"models/{model}.keras", f"data/{data}.npz")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", SCORE, str(batch), *args], capture_output=True, text=True,
                            env=env, cwd=root)
    assert result.returncode == 0, result.stderr
    scores = json.loads(result.stdout.strip().splitlines()[-1])
    for model, key in (("transfer", "transfer"), ("scratch", "scratch"), ("source", "pretrain")):
        assert scores[f"models/{model}.keras"] == metrics[key]["test_accuracy"], model
    assert (root / "models/transfer.savedmodel/saved_model.pb").is_file()


def test_artifact_fetched_from_a_remote_opens_and_predicts(repo, tmp_path):
    """`dvc artifacts get <repo> mnist-transfer`, from outside the repository, through a DVC remote."""
    root, env = repo
    storage = tmp_path / "storage"
    sh(root, "dvc", "remote", "add", "-f", "-d", "shared", str(storage), env=env)
    sh(root, "dvc", "push", env=env)
    sh(root, "git", "add", "-A", env=env)
    sh(root, "git", "commit", "-qm", "results", env=env)
    # a registered version (a GTO tag): `dvc artifacts get` fetches the latest one
    sh(root, "git", "tag", "-a", "mnist-transfer@v1.0.0", "-m", "Registering mnist-transfer v1.0.0", env=env)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    sh(outside, "dvc", "artifacts", "get", str(root), "mnist-transfer", "-o", "model.keras", env=env)
    # the very bytes of the exported model, which the test above opens and scores
    assert (outside / "model.keras").read_bytes() == (root / "models/transfer.keras").read_bytes()


def test_an_experiment_runs_what_its_change_touches_and_shows_its_metrics(repo):
    """The README's `dvc exp run -S ...`: the changed stages run, and `dvc exp show` has the experiment's params and
    metrics, the untouched runs' numbers being the baseline's."""
    root, env = repo
    sh(root, "git", "add", "-A", env=env)  # experiments start from a commit (dvc.lock included)
    sh(root, "git", "commit", "-qm", "reproduced", "--allow-empty", env=env)
    try:
        out = sh(root, "dvc", "exp", "run", "-n", "lr-1e-3", "-S", "finetune.lr=1e-3", env=env).stdout
        ran = [line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")]
        assert sorted(ran) == ["compare", "export", "finetune"], out
        shown = {}
        for baseline in json.loads(sh(root, "dvc", "exp", "show", "--json", env=env).stdout):
            for experiment in baseline.get("experiments") or []:
                for rev in experiment.get("revs") or []:
                    shown[rev.get("name")] = rev.get("data") or {}
        data = shown["lr-1e-3"]
        assert float(data["params"]["params.yaml"]["data"]["finetune"]["lr"]) == 0.001
        metrics = data["metrics"]["metrics/compare.json"]["data"]
        committed = json.loads(sh(root, "git", "show", "HEAD:metrics/compare.json", env=env).stdout)
        assert metrics["scratch"] == {k: v for k, v in committed["scratch"].items() if v is not None}
        assert metrics["transfer"] != committed["transfer"]
    finally:  # the workspace back at the baseline, for the tests after this one
        sh(root, "git", "checkout", "-q", "--", ".", env=env)
        sh(root, "dvc", "checkout", "-q", env=env)


def test_study_pipeline_adds_the_controls_to_the_sweeps_points(repo):
    """`dvc repro study/dvc.yaml` trains only the controls (the main sweep is up to date) and reports every run."""
    import shutil

    root, env = repo
    shutil.copytree(ROOT / "study", root / "study")
    try:
        out = sh(root, "dvc", "repro", "study/dvc.yaml", env=env).stdout
        ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
        assert ran == {"study/dvc.yaml:controls@0", "study/dvc.yaml:controls@1", "study/dvc.yaml:study"}
        controls = ("adabn", "random_frozen", "depth1", "depth2", "depth3")
        assert {p.name for p in (root / "metrics/controls").rglob("*.json")} == {
            f"{run}-{budget}-{seed}.json" for run in controls for budget in (20, 60) for seed in (0, 1)}
        study = json.loads((root / "metrics/study.json").read_text())
        assert study["runs"] == ["transfer", "frozen", "scratch", *controls]
        assert study["transfer"] == json.loads((root / "metrics/data_efficiency.json").read_text())["transfer"]
        for run in set(study["runs"]) - {"scratch"}:  # two seeds: every difference has an interval
            assert study[f"{run}_minus_scratch"]["60"]["verdict"] in ("equivalent", "higher", "lower", "inconclusive")
        assert {r["run"] for r in read_csv(root / "metrics/study/gain.csv")} == set(study["runs"]) - {"scratch"}
        assert (root / "metrics/study/gain.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        status = sh(root, "dvc", "status", "study/dvc.yaml", env=env).stdout
        assert "up to date" in status, status
    finally:
        shutil.rmtree(root / "study")
