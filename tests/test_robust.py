"""Inputs that can't give a right answer: one line naming the file or key, exit code 1, no output written."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time

import psutil
import pytest
import yaml

from tests.support import ROOT, default_params, run_main, tiny_params
from tlpipe.core import io
from tlpipe.core.cli import run
from tlpipe.core.errors import PipelineError
from tlpipe.core.params import load_params


@pytest.mark.parametrize("key, value, at, problem", [
    ("pretrain.lr", float("inf"), "pretrain.lr", "finite number (got inf)"),
    ("sweep.head_lr", float("nan"), "sweep.head_lr", "finite number (got nan)"),
    ("compare.threshold", float("-inf"), "compare.threshold", "finite number (got -inf)"),
    ("download.backoff_s", float("inf"), "download.backoff_s", "finite number (got inf)"),
    ("transfer.freeze", ["conv1", "bn1", "target_dense", "target_out"], "transfer",
     "freeze names 'target_dense', a layer not in layers"),
    ("download.urls", {"mnist": ["http://example.com/mnist/"]}, "download.urls.mnist[0]",
     "must be an https:// address"),
])
def test_impossible_settings_are_refused(tmp_path, key, value, at, problem):
    raw = default_params()
    section, name = key.split(".")
    raw[section][name] = value
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(PipelineError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}: {at}: ") and problem in str(err.value) and "\n" not in str(err.value)


def test_a_key_given_twice_is_refused_as_dvc_does(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text((ROOT / "params.yaml").read_text().replace("  epochs: 5\n", "  epochs: 5\n  epochs: 50\n", 1))
    line = path.read_text().splitlines().index("  epochs: 50") + 1
    with pytest.raises(PipelineError, match=f"^{path}: line {line}: key 'epochs' appears twice in one mapping$"):
        load_params(path)


def test_an_alias_bomb_is_refused_at_its_first_alias(tmp_path):
    """Nine levels of nine aliases: 387 million items to whatever walks the values (DVC's interpolation does)."""
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    path = tmp_path / "params.yaml"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PipelineError, match=f"^{path}: line 2: YAML aliases"):
        load_params(path)


@pytest.mark.parametrize(("text", "message"), [
    ("base: {seed: 1}\n? [1, 2]\n: 3\n", "line 2: a key must be a plain value, not a list or mapping"),
    ("base:\n  <<: {seed: 1}\n", "line 2: merge keys (<<) are not allowed here; write the keys out"),
])
def test_keys_yaml_allows_but_params_cannot_hold_are_one_line(tmp_path, text, message):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(PipelineError, match=f"^{path}: " + message.replace("(", r"\(").replace(")", r"\)")):
        load_params(path)


def test_make_repro_checks_params_before_dvc(tmp_path):
    """`python -m tlpipe.core.params` (what make repro runs first) is the stages' check, as one line and exit 1."""
    path = tmp_path / "params.yaml"
    path.write_text("a: &x [1]\nb: *x\n")
    result = subprocess.run([sys.executable, "-m", "tlpipe.core.params", str(path)], capture_output=True, text=True,
                            cwd=ROOT, env=os.environ | {"TF_CPP_MIN_LOG_LEVEL": "3"})
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        f"error: params: {path}: line 2: YAML aliases (*name) are not allowed here; write the value out"]
    makefile = (ROOT / "Makefile").read_text().split("\nrepro:", 1)[1].split("\n\n", 1)[0]
    recipe = [line.strip() for line in makefile.splitlines()[1:]]
    assert recipe == ["$(PY) -m tlpipe.core.params", "dvc repro"]  # the check first, then DVC


def test_a_diverging_run_stops_with_one_line_and_writes_nothing(tmp_path, mirror, data_dir):
    params = tiny_params(mirror[1])
    params["scratch"].update(lr=1e38, warmup=0.0, schedule="constant")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    result = run_main(tmp_path, "scratch", str(data_dir / "target.npz"), "models/s.named.h5", "logs")
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "error: scratch: training diverged: loss and val_loss not finite in epoch 1; lower scratch.lr "
        "(nothing was written)")
    assert not (tmp_path / "models").exists() and not (tmp_path / "logs").exists()
    assert not list(tmp_path.rglob(".*tmp*"))


def test_a_diverging_sweep_point_is_named(params_file, data_dir):
    from tlpipe.core.data import load_npz
    from tlpipe.lab.points import run_points

    params = load_params(params_file).model_copy(deep=True)
    sweep = params.sweep.model_copy(update={"lr": 1e38, "schedule": "constant"})
    params = params.model_copy(update={"sweep": sweep})
    with pytest.raises(PipelineError, match=r"^sweep point scratch-20-0: training diverged: .* by step 2; "
                                            r"lower sweep.lr \(nothing was written\)$"):
        run_points(["scratch"], [20], 0, params, load_npz(data_dir / "mnist.npz"), None)


def test_an_output_that_cannot_be_written_fails_before_training(tmp_path, mirror, data_dir):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(mirror[1])))
    (tmp_path / "models").write_text("a file where the folder should be")
    started = time.perf_counter()
    result = run_main(tmp_path, "scratch", str(data_dir / "target.npz"), "models/s.named.h5", "logs")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: scratch: models/s.named.h5: cannot write here (Not a directory)"]
    assert "Epoch" not in result.stdout and not (tmp_path / "logs").exists()
    assert time.perf_counter() - started < 60


def test_a_full_disk_names_the_output_not_its_temporary_file(tmp_path, monkeypatch):
    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # as write() raises it: no file name

    monkeypatch.setattr(type(tmp_path), "write_text", full)
    with pytest.raises(PipelineError, match=f"^{tmp_path / 'out.json'}: cannot write \\(No space left on device\\)$"):
        io.write_json(tmp_path / "out.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_an_os_error_is_one_line_naming_the_path(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["stages/export.py"])
    monkeypatch.delenv("TLPIPE_DEBUG", raising=False)

    def full_disk():
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "models/transfer.keras")

    with pytest.raises(SystemExit) as exited:
        run(full_disk)
    assert exited.value.code == 1
    assert capsys.readouterr().err == "error: export: models/transfer.keras: No space left on device\n"
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def test_an_orphaned_stage_publishes_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(io, "PARENT", os.getppid() + 1)  # as if dvc had died and another process adopted us
    with pytest.raises(PipelineError, match="the dvc process that ran this stage is gone"):
        io.write_text(tmp_path / "out.txt", "late")
    with pytest.raises(PipelineError, match="the dvc process that ran this stage is gone"), \
            io.atomic_dir(tmp_path / "dir") as tmp:
        tmp.mkdir()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


# A parent (standing in for dvc) that starts a stage and then waits; the stage writes a file after 30 s.
PARENT = textwrap.dedent("""
    import subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], cwd=sys.argv[2])
    print(child.pid, flush=True)
    time.sleep(120)
""")
STAGE = textwrap.dedent("""
    import time
    from tlpipe.core.cli import run
    from tlpipe.core.io import write_text
    def main():
        time.sleep(30)
        write_text("late.txt", "written after dvc was gone")
    run(main)
""")


def test_a_stage_dies_with_its_parent(tmp_path):
    env = os.environ | {"PYTHONPATH": str(ROOT), "DVC_STAGE": "scratch"}  # as dvc runs a stage
    parent = subprocess.Popen([sys.executable, "-c", PARENT, STAGE, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                              env=env)
    child = int(parent.stdout.readline())
    time.sleep(2)  # the stage is running
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    for _ in range(100):
        try:
            if psutil.Process(child).status() == psutil.STATUS_ZOMBIE:  # dead, not yet reaped by init
                break
        except psutil.NoSuchProcess:
            break
        time.sleep(0.1)
    else:
        os.kill(child, signal.SIGKILL)
        pytest.fail("the stage outlived its parent by 10 s")
    assert not (tmp_path / "late.txt").exists()
