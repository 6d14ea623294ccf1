"""Atomic file output: a killed or failed stage never leaves a half-written file behind."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

# Temporary files of atomic writes in progress, so that an interrupt handler can remove them before exiting.
PENDING: set[Path] = set()


def remove_pending() -> None:
    """Delete the temporary files (and folders) of any atomic write in progress."""
    for tmp in list(PENDING):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


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
        yield tmp_path
        # mkstemp makes the file private; give it the permissions a plain open() would have.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        os.replace(tmp_path, path)
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
        yield tmp_path
        old = None
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


def reproducible_zip(path: Path) -> None:
    """Rewrite a zip archive (a `.keras` file) with fixed timestamps, so that equal contents give equal bytes.

    Keras stamps `metadata.json` with the save time and every entry with the clock; both are set to constants.
    """
    with zipfile.ZipFile(path) as archive:
        entries = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, payload in entries:
            if name == "metadata.json":
                meta = json.loads(payload)
                meta["date_saved"] = "1980-01-01@00:00:00"
                payload = json.dumps(meta).encode()
            archive.writestr(zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0)), payload,
                             compress_type=zipfile.ZIP_DEFLATED)


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
