"""Test support: tiny synthetic IDX datasets and params (no real data, no network), and running a stage."""

from __future__ import annotations

import contextlib
import copy
import gzip
import hashlib
import importlib
import io
import os
import shutil
import signal
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from tlpipe.core.data import DATASETS, FILES

ROOT = Path(__file__).resolve().parents[1]


def idx_bytes(array: np.ndarray) -> bytes:
    """An uncompressed IDX payload of unsigned bytes."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def synthetic_arrays(n_train: int, n_test: int, seed: int, size: int = 28) -> dict[str, np.ndarray]:
    """Learnable toy digits: class k lights up a bright block at a class-specific place, plus noise."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        y = np.arange(n) % 10
        rng.shuffle(y)
        x = rng.integers(0, 60, size=(n, size, size))
        for k in range(10):
            r, c = divmod(k, 4)
            x[y == k, r * 7 : r * 7 + 7, c * 7 : c * 7 + 7] += 180
        out[f"x_{split}"], out[f"y_{split}"] = x.astype(np.uint8), y.astype(np.uint8)
    return out


def write_mirror(root: Path, n_train: int = 400, n_test: int = 100) -> dict[str, dict[str, str]]:
    """Write both datasets as <root>/<folder>/*.gz; return their payload SHA-256s as in params download.sha256."""
    digests = {}
    for i, folder in enumerate(DATASETS.values()):
        arrays = synthetic_arrays(n_train, n_test, seed=i)
        (root / folder).mkdir(parents=True, exist_ok=True)
        digests[folder] = {}
        for stem, (key, _) in FILES.items():
            payload = idx_bytes(arrays[key])
            (root / folder / f"{stem}.gz").write_bytes(gzip.compress(payload))
            digests[folder][stem] = hashlib.sha256(payload).hexdigest()
    return digests


def committed_values(committed: object, workspace: object) -> object:
    """`workspace`'s keys with `committed`'s values wherever both have the key.

    Values the workspace changed (`dvc exp run -S finetune.lr=3e-4`) revert to the committed ones; keys the
    workspace adds or removes (an uncommitted change of the params schema, made with the code that reads it)
    follow the workspace, so the code under test can still load the result.
    """
    if isinstance(committed, dict) and isinstance(workspace, dict):
        return {k: committed_values(committed[k], v) if k in committed else v for k, v in workspace.items()}
    if isinstance(committed, dict) or isinstance(workspace, dict):
        return workspace  # a key changed between value and mapping: the schema changed
    return committed


def default_params(root: Path = ROOT) -> dict:
    """The committed defaults of `root`/params.yaml, whatever experiment the workspace file holds.

    Reads `git show HEAD:./params.yaml` when `root` is a git work tree with params.yaml committed (merged
    by `committed_values` with the workspace file's keys), else the workspace file.
    """
    workspace = yaml.safe_load((root / "params.yaml").read_text())
    try:
        shown = subprocess.run(["git", "show", "HEAD:./params.yaml"], cwd=root, capture_output=True, text=True)
    except OSError:  # no git
        return workspace
    if shown.returncode != 0:  # not a git work tree, or params.yaml not committed
        return workspace
    return committed_values(yaml.safe_load(shown.stdout), workspace)


def tiny_params(digests: dict[str, dict[str, str]]) -> dict:
    """The repository's committed params.yaml shrunk for seconds-long runs on the synthetic data."""
    params = copy.deepcopy(default_params())
    params["base"].update(batch_size=32, val_size=50, min_steps=20)
    params["download"].update(dirs={}, urls={}, sha256=digests, retries=1, backoff_s=0.0)
    params["model"].update(conv_filters=[4, 8, 8], pretrain_dense=16, head_dense=8)
    for stage in ("pretrain", "frozen_head", "finetune", "scratch"):
        params[stage]["epochs"] = 2
    params["scratch"]["epochs"] = 4
    params["frozen_head"]["batch_size"] = 16
    params["pretrain"]["batch_size"] = 16
    params["sweep"].update(budgets=[20, 60], seeds=[0, 1], batch_size=8, steps=4, eval_every=2, val_max=10)
    return params


# What a copy of the project needs to run its pipeline (data comes from the mirror, params from tiny_params).
PROJECT_FILES = ["dvc.yaml", "stages", "tlpipe", ".dvc/config", ".dvc/plots", ".dvcignore", ".gitignore"]


def copy_tiny_project(dest: Path, digests: dict[str, dict[str, str]]) -> None:
    """Copy the project's code and DVC set-up into `dest` (made if missing), with tiny_params as its params.yaml."""
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(src, dest / name)
    (dest / "params.yaml").write_text(yaml.safe_dump(tiny_params(digests)))


def run_stage(cwd: Path, stage: str, *args: str, mirror: Path | None = None, **popen) -> subprocess.CompletedProcess:
    """Run stages/<stage>.py as DVC would, in `cwd`; DATA_MIRROR is `mirror` (unset when None)."""
    env = {k: v for k, v in os.environ.items() if k not in ("TLPIPE_DEBUG", "DATA_MIRROR")}
    env |= {"TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    if mirror:
        env["DATA_MIRROR"] = str(mirror)
    command = [sys.executable, str(ROOT / "stages" / f"{stage}.py"), *args]
    if popen:
        return subprocess.Popen(command, cwd=cwd, env=env, text=True, **popen)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)


def run_main(cwd: Path, stage: str, *args: str) -> subprocess.CompletedProcess:
    """Run stages/<stage>.py's main() in this process, wrapped by cli.run as under DVC, in `cwd` with `args`; its
    exit code, stdout and stderr. Saves the seconds a new process takes to import TensorFlow (run_stage is the
    real process, for what only a process shows: signals, start-up)."""
    from tlpipe.core.cli import run

    module = importlib.import_module(f"stages.{stage}")
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}  # cli.run sets its own
    out, err, code = io.StringIO(), io.StringIO(), 0
    here, argv, environ = os.getcwd(), sys.argv, dict(os.environ)
    try:
        os.chdir(cwd)
        sys.argv = [f"{stage}.py", *args]
        for name in ("TLPIPE_DEBUG", "DVC_STAGE"):  # as run_stage: no traceback mode, not under dvc
            os.environ.pop(name, None)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                run(module.main)
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        os.chdir(here)
        sys.argv = argv
        os.environ.clear()
        os.environ.update(environ)
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    return subprocess.CompletedProcess([stage, *args], code, out.getvalue(), err.getvalue())


def set_param(path: Path, dotted: str, value: object = None, delete: bool = False) -> None:
    """Set (or delete) one dotted key in the params file at `path`."""
    raw = yaml.safe_load(path.read_text())
    *parents, last = dotted.split(".")
    node = raw
    for key in parents:
        node = node[key]
    if delete:
        del node[last]
    else:
        node[last] = value
    path.write_text(yaml.safe_dump(raw))


def dvc_env(mirror: Path) -> dict[str, str]:
    """The environment to run `dvc` with in a tiny project copy (copy_tiny_project) on the synthetic `mirror`.

    This interpreter's bin first on PATH: `dvc queue start` starts its workers, and each worker its experiment, as
    the first `dvc` there, and stages run the first `python`. A git identity for the commits DVC makes.
    """
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TLPIPE_DEBUG")}
    return env | {
        "DATA_MIRROR": str(mirror),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
        "TF_CPP_MIN_LOG_LEVEL": "3",
    }


def write_image_folder(root: Path, counts: dict[str, int], seed: int = 0, size: int = 40) -> dict[str, list[Path]]:
    """Class folders of tiny learnable PNGs under `root`: class i is a dark bar at its own angle on light paper,
    in sizes and modes that vary (L, RGB, RGBA with an opaque background, a 16-bit PNG). Returns the files."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    written: dict[str, list[Path]] = {}
    for c, (name, n) in enumerate(sorted(counts.items())):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        written[name] = []
        for k in range(n):
            side = size + int(rng.integers(-8, 9))
            image = Image.new("L", (side, side), int(rng.integers(200, 250)))
            angle = np.pi * c / max(len(counts), 1)
            dx, dy = np.cos(angle) * side * 0.35, np.sin(angle) * side * 0.35
            mid = side / 2 + rng.normal(0, 1, 2)
            ImageDraw.Draw(image).line([(mid[0] - dx, mid[1] - dy), (mid[0] + dx, mid[1] + dy)], fill=20,
                                       width=max(2, side // 8))
            mode = ("L", "RGB", "RGBA", "I;16")[k % 4]
            if mode == "I;16":
                image = Image.fromarray(np.asarray(image).astype(np.uint16) * 257)
            else:
                image = image.convert(mode)
            path = folder / f"{name}-{k}.png"
            image.save(path)
            written[name].append(path)
    return written
