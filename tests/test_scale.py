"""Beyond one CPU: the TensorFlow extras, and the label-budget sweep split over machines through DVC.

The sweep test stands two clones in for two machines, with a local bare Git repository and a local DVC remote
between them, on tiny data: docs/scaling-out.md.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import ROOT, copy_tiny_project
from tlpipe.apps.shard import parse_shard, shard_stages
from tlpipe.core.errors import PipelineError

SWEEP = [f"sweep@{seed}" for seed in (0, 1)]  # tiny params: 2 seeds (of 2 budgets each)


def sh(cwd: Path, *args: str, env: dict | None = None) -> str:
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result.stdout


def ran(output: str) -> list[str]:
    """The sweep stages DVC ran (trained) in a `dvc repro` output."""
    return re.findall(r"^Running stage '(sweep@[^']+)'", output, re.M)


def restored(output: str) -> list[str]:
    """The sweep stages DVC restored from the run-cache in a `dvc repro` output."""
    return re.findall(r"^Stage '(sweep@[^']+)' is cached - skipping run", output, re.M)


# --- the shard split -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["0/4", "5/4", "2", "a/b", "1/0", "-1/2", ""])
def test_bad_shard_is_one_line(text):
    with pytest.raises(PipelineError, match=r"SHARD must be i/n with 1 <= i <= n") as caught:
        parse_shard(text)
    assert "\n" not in str(caught.value)


def test_shards_are_disjoint_cover_every_stage_and_are_balanced():
    names = ["download", "pretrain", *[f"sweep@{s}" for s in range(5)], "data_efficiency"]  # a stage per seed
    sweep = [n for n in names if n.startswith("sweep@")]
    for count in (1, 2, 3, 4, 5, 7):
        shards = [shard_stages(names, i, count) for i in range(1, count + 1)]
        flat = [stage for shard in shards for stage in shard]
        assert sorted(flat) == sorted(sweep) and len(flat) == len(set(flat)), count  # disjoint, all of them
        assert max(map(len, shards)) - min(map(len, shards)) <= 1, count
    # with 5 shards, shard i takes seed i-1 (every budget of it)
    assert shard_stages(names, 2, 5) == ["sweep@1"]


def test_make_refuses_an_unknown_tensorflow_build():
    result = subprocess.run(["make", "-n", "test", "TF=tpu"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and "TF must be cpu or gpu, got 'tpu'" in result.stderr


def test_make_sweep_shard_needs_shard():
    result = subprocess.run(["make", "sweep-shard", "-o", f".venv/installed-{'cpu'}"], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode != 0 and "sweep-shard needs SHARD=i/n" in result.stderr


def test_no_output_in_the_dvc_cache_is_also_tracked_by_git():
    """DVC refuses to save an output git tracks (`dvc repro` fails after training): the sweep's records moved
    from git to the DVC cache, and must stay out of git."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    cached = []
    for stage in stages.values():
        for out in stage.get("outs", []):
            path, options = (out, {}) if isinstance(out, str) else next(iter(out.items()))
            if (options or {}).get("cache", True):
                cached.append(re.sub(r"\$\{[^}]+\}", "*", path))  # a matrix stage's outputs: a pattern
    assert "metrics/sweep/seed-*" in cached
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    both = [f for f in tracked for pattern in cached if fnmatch.fnmatch(f, pattern) or f.startswith(f"{pattern}/")]
    assert not both, f"in git and in the DVC cache: {both[:5]}"


# --- the TensorFlow builds -----------------------------------------------------------------------------------


@pytest.mark.ci  # the package index, a minute: the project's check (.ci/run), not a user's `make test`
def test_tensorflow_extras_resolve_to_exactly_one_build(tmp_path):
    """`pip install --dry-run` resolves each extra against the package index (needs PyPI, like the install)."""
    found = {}
    for extra in ("cpu", "gpu"):
        report = tmp_path / f"{extra}.json"
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
             "--report", str(report), f".[{extra}]"],
            cwd=ROOT, capture_output=True, text=True,
        )
        offline = ("NewConnectionError", "Temporary failure in name resolution", "Network is unreachable")
        if result.returncode and any(sign in result.stderr for sign in offline):
            pytest.skip("the package index is out of reach (this test resolves against it, as `make` installs)")
        assert result.returncode == 0, result.stderr[-2000:]
        found[extra] = {re.sub(r"[-_.]+", "-", item["metadata"]["name"]).lower(): item["metadata"]["version"]
                        for item in json.loads(report.read_text())["install"]}
    cpu, gpu = found["cpu"], found["gpu"]
    assert cpu["tensorflow-cpu"] == gpu["tensorflow"] == "2.21.0"
    assert "tensorflow" not in cpu and "tensorflow-cpu" not in gpu  # never both in one environment
    assert not [name for name in cpu if re.search(r"-cu\d+$", name)]  # no CUDA library (nvidia-ml-py is DVC's)
    assert {"nvidia-cudnn-cu12", "nvidia-cublas-cu12"} <= set(gpu)  # the CUDA libraries of tensorflow[and-cuda]
    assert cpu["keras"] == gpu["keras"]  # the rest is the same


# --- the sweep across machines ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def origin(tmp_path_factory, mirror):
    """A bare Git repository and a DVC remote holding the tiny project with download, prepare and pretrain done once
    (by "the first machine", which committed dvc.lock and pushed its outputs); the env to run DVC with."""
    base = tmp_path_factory.mktemp("scale")
    first = base / "first"
    copy_tiny_project(first, mirror[1])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TLPIPE_DEBUG")} | {
        "DATA_MIRROR": str(mirror[0]),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }
    sh(base, "git", "init", "-q", "--bare", "-b", "main", "origin.git", env=env)
    sh(first, "git", "init", "-q", "-b", "main", env=env)
    sh(first, "dvc", "remote", "add", "-f", "-d", "shared", str(base / "dvc-remote"), env=env)
    sh(first, "git", "add", "-A", env=env)
    sh(first, "git", "commit", "-qm", "tiny project", env=env)  # DVCLive needs a commit to exist
    sh(first, "dvc", "repro", "prepare", "pretrain", env=env)
    sh(first, "dvc", "push", env=env)
    sh(first, "git", "add", "-A", env=env)
    sh(first, "git", "commit", "-qm", "pretrain done once", env=env)
    sh(first, "git", "remote", "add", "origin", str(base / "origin.git"), env=env)
    sh(first, "git", "push", "-q", "origin", "main", env=env)
    return base, env


def machine(origin, name: str) -> Path:
    """A fresh clone of the origin: another machine."""
    base, env = origin
    sh(base, "git", "clone", "-q", str(base / "origin.git"), name, env=env)
    return base / name


def shard(origin, name: str, which: str) -> tuple[Path, str]:
    base, env = origin
    clone = machine(origin, name)
    # run as `make sweep-shard` does (the module from the clone itself, through the clone's python -m)
    return clone, sh(clone, sys.executable, "-m", "tlpipe.apps.shard", which, env=env | {"PYTHONPATH": str(clone)})


def records(root: Path) -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((root / "metrics/sweep").rglob("*.json"))}


def test_two_machines_share_the_sweep_and_a_third_collects_without_training(origin):
    base, env = origin
    a, out_a = shard(origin, "a", "1/2")
    b, out_b = shard(origin, "b", "2/2")
    # every point trained exactly once across the two machines
    assert sorted(ran(out_a) + ran(out_b)) == sorted(SWEEP) and not set(ran(out_a)) & set(ran(out_b))
    assert sorted(ran(out_a)) == sorted(SWEEP[0::2]) and sorted(ran(out_b)) == sorted(SWEEP[1::2])

    collector = machine(origin, "collector")
    # pulls the run-cache, the sweep's inputs and the restored points' records (`dvc pull --run-cache` and a
    # plain `dvc repro` retrain instead: that pull fetches the run-cache entries, not the records they name)
    out_c = sh(collector, "dvc", "repro", "--pull", "data_efficiency", env=env)
    assert ran(out_c) == [], out_c  # the collector trained none ...
    assert sorted(restored(out_c)) == sorted(SWEEP)  # ... it restored every point from the run-cache
    assert "Running stage 'data_efficiency'" in out_c
    # the very files the shards wrote (their seconds included, which no rerun would reproduce)
    assert records(collector) == records(a) | records(b) and len(records(collector)) == 3 * 2 * len(SWEEP)

    # and the collector's aggregate is of those records
    summary = json.loads((collector / "metrics/data_efficiency.json").read_text())
    assert set(summary["transfer"]) == {"20", "60"} and summary["train_seconds_total"] > 0


def test_a_shard_refuses_inputs_that_differ_from_dvc_lock(origin):
    """Points trained from other Fashion weights than the committed ones would never match across machines."""
    base, env = origin
    clone = machine(origin, "stale")
    params = clone / "params.yaml"
    raw = yaml.safe_load(params.read_text())
    raw["pretrain"]["epochs"] += 1  # pretrain no longer matches dvc.lock
    params.write_text(yaml.safe_dump(raw))
    result = subprocess.run([sys.executable, "-m", "tlpipe.apps.shard", "1/2"], cwd=clone, capture_output=True,
                            text=True, env=env | {"PYTHONPATH": str(clone)})
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: shard: pretrain: not up to date with dvc.lock"), result.stderr
    assert "Running stage" not in result.stdout and not list((clone / "metrics/sweep").rglob("*.json"))
