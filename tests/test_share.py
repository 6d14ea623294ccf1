"""Sharing experiments: `dvc exp push` in one clone, `dvc exp pull` and `dvc exp apply` in another.

Clones stand in for team members, with a local bare Git repository and one local DVC remote between them (the
default remote of the committed .dvc/config, an absolute path, so every clone uses the same folder), on tiny data:
docs/scaling-out.md, "Sharing experiments".
"""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from tests.support import copy_tiny_project, dvc_env

EXP = "lr-1e-3"  # A's experiment
CHANGED = ["finetune", "compare", "export"]  # the stages a change of finetune.lr runs


def sh(cwd: Path, *args: str, env: dict) -> str:
    """Run a command that must succeed; its stdout and stderr together (DVC warns on stderr)."""
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}")
    return result.stdout + result.stderr


def ran(output: str) -> list[str]:
    """The stages DVC ran (trained) in a command's output."""
    return re.findall(r"^Running stage '([^']+)'", output, re.M)


def exp_ref(root: Path, name: str) -> str | None:
    """The commit of experiment `name` in `root` (its git ref refs/exps/<baseline>/<name>), None if it has none."""
    refs = subprocess.run(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps/"], cwd=root,
                          capture_output=True, text=True, check=True).stdout.split("\n")
    found = [line.split()[0] for line in refs if line.endswith(f"/{name}")]
    assert len(found) <= 1, refs
    return found[0] if found else None


def exp_lr(root: Path, rev: str) -> float:
    """finetune.lr in the params.yaml of commit `rev`."""
    shown = subprocess.run(["git", "show", f"{rev}:params.yaml"], cwd=root, capture_output=True, text=True, check=True)
    return float(yaml.safe_load(shown.stdout)["finetune"]["lr"])


def files(root: Path) -> dict[str, str]:
    """MD5 of each file an experiment sets: params.yaml, dvc.lock and every file in data/, models/ and metrics/."""
    paths = [root / "params.yaml", root / "dvc.lock"]
    for folder in ("data", "models", "metrics"):
        paths += [path for path in (root / folder).rglob("*") if path.is_file()]
    return {path.relative_to(root).as_posix(): hashlib.md5(path.read_bytes()).hexdigest() for path in sorted(paths)}


class Team(NamedTuple):
    base: Path  # holds origin.git, dvc-remote and the clones
    env: dict
    sha: str  # the commit of A's experiment
    files: dict[str, str]  # files() of A's workspace right after the experiment

    def clone(self, name: str) -> Path:
        """A fresh clone of origin.git: another team member."""
        sh(self.base, "git", "clone", "-q", str(self.base / "origin.git"), name, env=self.env)
        return self.base / name


@pytest.fixture(scope="module")
def team(tmp_path_factory, mirror) -> Team:
    """origin.git and the DVC remote holding the tiny project's baseline (the whole pipeline reproduced, committed
    and pushed) and experiment EXP, which clone `a` ran on it and pushed."""
    base = tmp_path_factory.mktemp("share")
    env = dvc_env(mirror[0])
    a = base / "a"
    copy_tiny_project(a, mirror[1])
    sh(base, "git", "init", "-q", "--bare", "-b", "main", "origin.git", env=env)
    sh(a, "git", "init", "-q", "-b", "main", env=env)
    sh(a, "dvc", "remote", "add", "-f", "-d", "shared", str(base / "dvc-remote"), env=env)
    sh(a, "git", "add", "-A", env=env)
    sh(a, "git", "commit", "-qm", "tiny project", env=env)  # DVCLive needs a commit to exist
    sh(a, "dvc", "repro", env=env)
    sh(a, "dvc", "push", env=env)
    sh(a, "git", "add", "-A", env=env)
    sh(a, "git", "commit", "-qm", "baseline", env=env)
    sh(a, "git", "remote", "add", "origin", str(base / "origin.git"), env=env)
    sh(a, "git", "push", "-q", "origin", "main", env=env)
    out = sh(a, "dvc", "exp", "run", "-n", EXP, "-S", "finetune.lr=1e-3", env=env)
    assert ran(out) == CHANGED, out
    sh(a, "dvc", "exp", "push", "origin", EXP, env=env)  # its git ref to origin, its outputs to the DVC remote
    sha = exp_ref(a, EXP)
    assert sha and exp_lr(a, sha) == 0.001
    return Team(base, env, sha, files(a))


def test_a_fresh_clone_pulls_and_applies_an_experiment_without_training(team):
    b = team.clone("b")
    pulled = sh(b, "dvc", "exp", "pull", "origin", EXP, env=team.env)
    assert exp_ref(b, EXP) == team.sha, pulled
    assert not (b / "models/finetune.named.h5").exists()  # pull fetches (the ref, the cache), the workspace waits
    applied = sh(b, "dvc", "exp", "apply", EXP, env=team.env)
    # the very files A's experiment wrote, its DVCLive summaries included (A's train_seconds, which no rerun gives)
    assert files(b) == team.files
    assert ran(pulled + applied) == []
    assert "Data and pipelines are up to date" in sh(b, "dvc", "status", env=team.env)  # the whole pipeline


def test_a_clone_whose_dvc_remote_lacks_the_outputs_gets_the_experiment_but_cannot_apply_it(team):
    """The clone's default DVC remote is another folder (added with --local here; a relative path resolved from
    another place does the same): `dvc exp pull` only warns and exits 0, `dvc exp apply` fails."""
    d = team.clone("d")
    (team.base / "other-remote").mkdir()
    sh(d, "dvc", "remote", "add", "--local", "-d", "other", str(team.base / "other-remote"), env=team.env)
    pulled = sh(d, "dvc", "exp", "pull", "origin", EXP, env=team.env)
    assert "Some of the cache files do not exist neither locally nor on remote" in pulled, pulled
    assert f"Pulled experiment '['{EXP}']'" in pulled and exp_ref(d, EXP) == team.sha
    applied = subprocess.run(["dvc", "exp", "apply", EXP], cwd=d, env=team.env, capture_output=True, text=True)
    assert applied.returncode != 0, applied.stdout
    assert "Checkout failed" in applied.stderr and "Is your cache up to date?" in applied.stderr, applied.stderr
    assert not (d / "models/finetune.named.h5").exists()


def test_pull_keeps_a_diverged_local_experiment_until_forced(team):
    """C ran an experiment of the same name on the same commit: `dvc exp pull` warns, keeps C's and exits 0;
    `dvc exp pull --force` replaces it with A's."""
    c = team.clone("c")
    sh(c, "dvc", "pull", env=team.env)  # the baseline's outputs
    # finetune alone (compare and export keep the baseline's entries): a version of its own is all this needs
    out = sh(c, "dvc", "exp", "run", "-n", EXP, "-S", "finetune.lr=3e-3", "finetune", env=team.env)
    assert ran(out) == ["finetune"], out
    own, own_files = exp_ref(c, EXP), files(c)
    assert own != team.sha and exp_lr(c, own) == 0.003

    kept = sh(c, "dvc", "exp", "pull", "origin", EXP, env=team.env)
    assert "has diverged from remote experiment" in kept and "--force" in kept, kept
    assert "No experiments to pull" in kept, kept
    assert exp_ref(c, EXP) == own and files(c) == own_files  # C's experiment, C's workspace

    sh(c, "dvc", "exp", "pull", "--force", "origin", EXP, env=team.env)
    assert exp_ref(c, EXP) == team.sha
    sh(c, "dvc", "exp", "apply", EXP, env=team.env)
    assert files(c) == team.files
