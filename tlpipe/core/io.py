"""Atomic file output: a killed or failed stage never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from tlpipe.core.errors import PipelineError

# Temporary files of atomic writes in progress, so that an interrupt handler can remove them before exiting.
PENDING: set[Path] = set()
# The stage's parent process (dvc) as cli.run found it; once another process has adopted the stage, dvc is gone.
PARENT: int | None = None


def orphaned() -> bool:
    return PARENT is not None and os.getppid() != PARENT


def _publish(tmp: Path, path: Path) -> None:
    """Rename a finished temporary output onto `path`, unless the stage was orphaned: then the next `dvc repro`
    may be writing the same outputs, and a late rename would race it."""
    if orphaned():
        raise PipelineError(f"{path}: not written, the dvc process that ran this stage is gone")
    os.replace(tmp, path)


def remove_pending() -> None:
    """Delete the temporary files (and folders) of any atomic write in progress."""
    for tmp in list(PENDING):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def pending(path: str | Path) -> Iterator[None]:
    """An output written in place by another library (DVCLive's logs): removed if the block fails or the stage is
    interrupted, kept if the block succeeds."""
    path = Path(path)
    PENDING.add(path)
    try:
        yield
    except BaseException:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        raise
    finally:
        PENDING.discard(path)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Keep the real suffix: numpy and h5py look at it.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    PENDING.add(tmp_path)
    try:
        try:
            yield tmp_path
        except OSError as e:  # a full disk, say: the output's own name, not its temporary one's
            raise PipelineError(f"{path}: cannot write ({e.strerror or e})") from e
        # mkstemp makes the file private; give it the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        _publish(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)
        PENDING.discard(tmp_path)


@contextlib.contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a temporary folder path beside `path` (not yet created); swap it in for `path` if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp_path.rmdir()  # writers such as model.export() create the folder themselves
    PENDING.add(tmp_path)
    try:
        try:
            yield tmp_path
        except OSError as e:
            raise PipelineError(f"{path}: cannot write ({e.strerror or e})") from e
        old = None
        if orphaned():
            raise PipelineError(f"{path}: not written, the dvc process that ran this stage is gone")
        if path.exists():  # moved aside first, so that some complete version is always in place
            old = path.with_name(f".{path.name}.old.tmp")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp_path, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
        PENDING.discard(tmp_path)


def check_writable(*paths: str | Path) -> None:
    """Raise PipelineError naming the first path that can't be written (its folder can't be made, or takes no new
    file): checked before the work, so that a read-only or missing output folder fails at once."""
    for path in map(Path, paths):
        folder = path.parent
        while not folder.exists() and folder != folder.parent:  # made later, inside the nearest existing folder
            folder = folder.parent
        try:
            if not folder.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
            fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=folder)
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise PipelineError(f"{path}: cannot write here ({e.strerror})") from e


def reproducible_zip(path: Path, metadata: dict | None = None) -> None:
    """Rewrite a zip archive (a `.keras` file) with fixed timestamps, so that equal contents give equal bytes.

    Keras stamps `metadata.json` with the save time and every entry with the clock; both are set to constants.
    Entries are stored uncompressed: deflate's bytes depend on the zlib build.
    `config.json` marks objects shared between layers (the dtype policy) with `shared_object_id`, a Python memory
    address; each is renumbered by its first appearance, which keeps the sharing and drops the address.
    `metadata` is added to metadata.json (Keras reads only its own keys there).
    """
    with zipfile.ZipFile(path) as archive:
        entries = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, payload in entries:
            if name == "metadata.json":
                meta = json.loads(payload)
                meta["date_saved"] = "1980-01-01@00:00:00"
                meta |= metadata or {}
                payload = json.dumps(meta).encode()
            elif name == "config.json":
                payload = json.dumps(_renumber_shared(json.loads(payload), {})).encode()
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), payload)


def _renumber_shared(node: object, ids: dict) -> object:
    if isinstance(node, dict):
        if "shared_object_id" in node:
            node["shared_object_id"] = ids.setdefault(node["shared_object_id"], len(ids) + 1)
        return {key: _renumber_shared(value, ids) for key, value in node.items()}
    if isinstance(node, list):
        return [_renumber_shared(value, ids) for value in node]
    return node


def write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: object) -> None:
    """Write `data` as indented, key-sorted JSON to `path` atomically."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def to_csv(rows: list[dict]) -> str:
    """Rows of equal keys as CSV text with a header."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()
