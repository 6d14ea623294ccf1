"""Datasets: fetch the gzip'd IDX files, verify their payloads, parse them, store and split the arrays."""

from __future__ import annotations

import hashlib
import http.client
import struct
import sys
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlpipe.core.errors import PipelineError
from tlpipe.core.io import atomic_path

# Dataset name -> (npz stem in data/, folder name in mirrors and in params download.*)
DATASETS = {"mnist": "mnist", "fashion_mnist": "fashion-mnist"}
# IDX file stem -> (npz array key, number of dimensions)
FILES = {
    "train-images-idx3-ubyte": ("x_train", 3),
    "train-labels-idx1-ubyte": ("y_train", 1),
    "t10k-images-idx3-ubyte": ("x_test", 3),
    "t10k-labels-idx1-ubyte": ("y_test", 1),
}
NUM_CLASSES = 10
# What each dataset's labels 0-9 mean (exported models carry theirs: predict prints them)
CLASS_NAMES = {
    "mnist": [str(digit) for digit in range(10)],
    "fashion_mnist": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                      "Ankle boot"],
}
_UBYTE = 0x08
_CHUNK = 1 << 20
# Bounds on one file, whatever a source sends: MNIST's largest is 9.9 MB compressed, 47 MB decompressed.
MAX_DOWNLOAD = 64 * 2**20
MAX_PAYLOAD = 256 * 2**20


def parse_idx(payload: bytes, ndim: int, name: str) -> np.ndarray:
    """Parse an uncompressed IDX payload of unsigned bytes with `ndim` dimensions."""
    if len(payload) < 4:
        raise PipelineError(f"{name}: too short for an IDX header ({len(payload)} bytes)")
    header = 4 + 4 * ndim
    if len(payload) < header:
        idx_size(payload[:4] + bytes(4 * ndim), ndim, name)  # a wrong magic or dimension count, named as such
        raise PipelineError(f"{name}: truncated IDX header")
    size = idx_size(payload[:header], ndim, name)
    shape = struct.unpack(f">{ndim}I", payload[4:header])
    if len(payload) != size:
        raise PipelineError(
            f"{name}: IDX header promises {size - header} bytes for shape {shape}, file holds {len(payload) - header}"
        )
    return np.frombuffer(payload, dtype=np.uint8, offset=header).reshape(shape)


def verify_sha256(payload: bytes, expected: str, name: str) -> None:
    """Raise if the SHA-256 of `payload` is not `expected`."""
    actual = hashlib.sha256(payload).hexdigest()
    if actual != expected:
        raise PipelineError(f"{name}: payload SHA-256 {actual[:16]}... does not match the pinned {expected[:16]}...")


def idx_size(header: bytes, ndim: int, name: str) -> int:
    """The whole payload's size that an IDX header promises; refuses a wrong header or one over MAX_PAYLOAD."""
    zero, dtype, dims = struct.unpack(">HBB", header[:4])
    if zero != 0 or dtype != _UBYTE:
        raise PipelineError(f"{name}: wrong IDX magic 0x{header[:4].hex()} (expected 0x000008{ndim:02x})")
    if dims != ndim:
        raise PipelineError(f"{name}: IDX file has {dims} dimensions, expected {ndim}")
    shape = struct.unpack(f">{ndim}I", header[4 : 4 + 4 * ndim])
    size = 4 + 4 * ndim + int(np.prod(shape, dtype=np.int64))
    if size > MAX_PAYLOAD:
        raise PipelineError(f"{name}: IDX header promises {size} bytes for shape {shape}, over the "
                            f"{MAX_PAYLOAD >> 20} MiB a dataset file may hold")
    return size


def gunzip_idx(read: Callable[[int], bytes], ndim: int, name: str) -> bytes:
    """Decompress a gzip'd IDX file from `read` as a stream: never more than its header promises (at most
    MAX_PAYLOAD) comes out, and never more than MAX_DOWNLOAD compressed bytes are read."""
    inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
    header = 4 + 4 * ndim
    out, limit, taken = bytearray(), header, 0

    def take(data: bytes) -> None:
        nonlocal limit
        while True:
            try:
                piece = inflate.decompress(data, limit - len(out) + 1)  # one byte over the limit shows an overflow
            except zlib.error as e:
                raise PipelineError(f"{name}: not a valid gzip file ({e})") from e
            out.extend(piece)
            if limit == header and len(out) >= header:
                limit = idx_size(bytes(out[:header]), ndim, name)
            if len(out) > limit:
                raise PipelineError(f"{name}: decompresses past the {limit} bytes that its IDX header promises")
            data = inflate.unconsumed_tail
            if inflate.eof or not (data or piece):
                return

    while not inflate.eof and (chunk := read(_CHUNK)):
        taken += len(chunk)
        if taken > MAX_DOWNLOAD:
            raise PipelineError(f"{name}: over {MAX_DOWNLOAD:,} bytes compressed, more than a dataset file may be")
        take(chunk)
    if not taken:
        raise PipelineError(f"{name}: empty file")
    if not inflate.eof:
        take(b"")  # output held back by the limit
    if not inflate.eof:
        raise PipelineError(f"{name}: not a valid gzip file (truncated)")
    return bytes(out)


def check_arrays(arrays: dict[str, np.ndarray], image_size: int, name: str) -> None:
    """Check image/label counts, image dimensions and the label range of one dataset."""
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.shape[1:] != (image_size, image_size):
            raise PipelineError(f"{name}: {split} images are {x.shape[1:]}, expected ({image_size}, {image_size})")
        if len(x) != len(y):
            raise PipelineError(f"{name}: {len(x)} {split} images but {len(y)} {split} labels")
        if len(y) and int(y.max()) >= NUM_CLASSES:
            raise PipelineError(f"{name}: {split} label {int(y.max())} is outside 0-{NUM_CLASSES - 1}")


@dataclass(frozen=True)
class Source:
    """Where one dataset's four .gz files can come from: a folder or a base URL."""

    location: str

    @property
    def is_url(self) -> bool:
        return self.location.startswith(("http://", "https://"))


def sources_for(folder: str, mirror: str | None, dirs: list[str], urls: list[str]) -> list[Source]:
    """The sources to try for one dataset, in order: $DATA_MIRROR, system folders, URLs."""
    found = [Source(str(Path(mirror) / folder))] if mirror else []
    return found + [Source(d) for d in dirs] + [Source(u.rstrip("/") + "/") for u in urls]


class _Retry(Exception):
    """A transfer that broke off: worth another attempt."""


def _read_url(url: str, ndim: int, timeout: float, log) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (https only, from params)
        total = int(response.headers.get("Content-Length") or 0)
        if total > MAX_DOWNLOAD:
            raise PipelineError(f"{url}: {total} bytes, over the {MAX_DOWNLOAD >> 20} MiB a dataset file may be")
        got, shown = 0, 0

        def read(size: int) -> bytes:
            nonlocal got, shown
            chunk = response.read(size)
            if not chunk and total and got < total:  # the stream ended early: the transfer broke, not the file
                raise _Retry(f"truncated download ({got} of {total} bytes)")
            got += len(chunk)
            if total and got * 4 // total > shown:
                shown = got * 4 // total
                log(f"    {url}: {got * 100 // total}% of {total / 1e6:.1f} MB")
            return chunk

        payload = gunzip_idx(read, ndim, url)
        if total and got != total:
            raise _Retry(f"truncated download ({got} of {total} bytes)")
        return payload


def fetch(source: Source, filename: str, ndim: int, timeout: float, retries: int, backoff: float, log) -> bytes:
    """One .gz file's IDX payload from a source, decompressed as it is read; URLs get `retries` attempts with
    exponential backoff when the transfer fails (not when the bytes are wrong)."""
    if not source.is_url:
        path = Path(source.location) / filename
        try:
            with path.open("rb") as f:
                return gunzip_idx(f.read, ndim, str(path))
        except OSError as e:
            raise PipelineError(f"{path}: {e.strerror}") from e
    url = source.location + filename
    last = ""
    for attempt in range(retries):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            return _read_url(url, ndim, timeout, log)
        except urllib.error.HTTPError as e:
            last = f"HTTP {e.code}"
            if e.code < 500:
                break  # 4xx will not get better by retrying
        except (urllib.error.URLError, OSError, http.client.HTTPException, _Retry) as e:
            last = str(getattr(e, "reason", e)) or type(e).__name__
    raise PipelineError(f"{url}: {last} (after {attempt + 1} attempt(s))")


def load_dataset(
    name: str, sources: list[Source], sha256: dict[str, str], image_size: int,
    timeout: float, retries: int, backoff: float, log=None,
) -> dict[str, np.ndarray]:
    """Fetch, verify and parse one dataset's four arrays, trying each source in turn."""
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    missing = [f for f in FILES if f not in sha256]
    if missing:
        raise PipelineError(f"params.yaml: download.sha256.{DATASETS[name]}.{missing[0]} is missing")
    failures = []
    for source in sources:
        log(f"{name}: trying {source.location}")
        try:
            arrays = {}
            for stem, (key, ndim) in FILES.items():
                label = f"{source.location.rstrip('/')}/{stem}.gz"
                payload = fetch(source, f"{stem}.gz", ndim, timeout, retries, backoff, log)
                # Verify before parsing: of unpinned bytes only the IDX header is read, to bound the stream.
                verify_sha256(payload, sha256[stem], label)
                arrays[key] = parse_idx(payload, ndim, label).copy()
                log(f"  {stem}: {arrays[key].shape} ok")
            check_arrays(arrays, image_size, f"{name} from {source.location}")
            return arrays
        except PipelineError as e:
            failures.append(str(e))
            log(f"  failed: {e}")
    tried = "; ".join(failures) or "no sources configured"
    raise PipelineError(
        f"could not get {name} from any source ({tried}). "
        f"Set DATA_MIRROR to a folder holding {DATASETS[name]}/*.gz, e.g. DATA_MIRROR=../shared/datasets"
    )


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """Write arrays to an uncompressed .npz atomically."""
    with atomic_path(path) as tmp:
        np.savez(tmp, **arrays)


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Read a dataset .npz written by the download stage (never unpickles)."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError as e:
        raise PipelineError(f"{path}: missing; run `dvc repro download` first") from e
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise PipelineError(f"{path}: not a readable .npz ({e}); run `dvc repro -f download`") from e
    wanted = {key for key, _ in FILES.values()}
    if set(arrays) != wanted:
        raise PipelineError(f"{path}: holds {sorted(arrays)}, expected {sorted(wanted)}")
    return arrays


@dataclass
class Data:
    """Training and validation arrays (images uint8 HxW, integer labels)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) indices: `val_size` random ones of `n` held out for validation (same seed, same split)."""
    if val_size >= n:
        raise PipelineError(f"params.yaml: base.val_size={val_size} must be smaller than the {n} training images")
    order = np.random.default_rng(seed).permutation(n)
    return order[val_size:], order[:val_size]


def split_train_val(
    x: np.ndarray, y: np.ndarray, val_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hold out `val_size` random training examples as a validation split (split_indices)."""
    train, val = split_indices(len(x), val_size, seed)
    return x[train], y[train], x[val], y[val]
