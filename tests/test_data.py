import gzip
import io
import shutil
import struct
import tracemalloc

import numpy as np
import pytest

import tlpipe.core.data as data_module
from tests.support import idx_bytes
from tlpipe.core.data import Source, check_arrays, gunzip_idx, load_dataset, parse_idx, split_train_val, verify_sha256
from tlpipe.core.errors import PipelineError


def quiet(_msg):
    pass


def test_parse_idx_round_trip():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    np.testing.assert_array_equal(parse_idx(idx_bytes(images), 3, "x"), images)
    labels = np.array([3, 1, 4], dtype=np.uint8)
    np.testing.assert_array_equal(parse_idx(idx_bytes(labels), 1, "y"), labels)


@pytest.mark.parametrize(
    ("payload", "ndim", "message"),
    [
        (b"\x00\x00\x09\x03" + b"\x00" * 12, 3, "wrong IDX magic 0x00000903"),
        (b"\x12\x34\x08\x03" + b"\x00" * 12, 3, "wrong IDX magic"),
        (idx_bytes(np.zeros((2, 2), np.uint8)), 3, "has 2 dimensions, expected 3"),
        (idx_bytes(np.zeros((2, 3, 3), np.uint8))[:-1], 3, "promises 18 bytes for shape (2, 3, 3), file holds 17"),
        (idx_bytes(np.zeros((2, 3, 3), np.uint8))[:10], 3, "truncated IDX header"),
        (b"\x00\x00", 1, "too short for an IDX header"),
    ],
)
def test_parse_idx_rejects_bad_headers(payload, ndim, message):
    with pytest.raises(PipelineError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_idx(payload, ndim, "f.idx")


def stream(data: bytes):
    return io.BytesIO(data).read


def test_gunzip_errors():
    payload = idx_bytes(np.arange(100, dtype=np.uint8))
    data = gzip.compress(payload)
    assert gunzip_idx(stream(data), 1, "f") == payload
    with pytest.raises(PipelineError, match="f: empty file"):
        gunzip_idx(stream(b""), 1, "f")
    with pytest.raises(PipelineError, match="not a valid gzip"):
        gunzip_idx(stream(data[: len(data) // 2]), 1, "f")  # truncated
    with pytest.raises(PipelineError, match="not a valid gzip"):
        gunzip_idx(stream(b"this is not gzip"), 1, "f")


def test_a_gzip_bomb_stops_at_what_the_header_promises():
    """64 MB of zeros behind a header that promises 100 bytes: refused with no more than a chunk in memory."""
    bomb = gzip.compress(idx_bytes(np.zeros(100, np.uint8)) + bytes(64 * 2**20), compresslevel=9)
    assert len(bomb) < 2**20
    tracemalloc.start()
    with pytest.raises(PipelineError, match="decompresses past the 108 bytes that its IDX header promises"):
        gunzip_idx(stream(bomb), 1, "bomb.gz")
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 8 * 2**20, peak


def test_a_header_promising_too_much_is_refused_before_decompressing_it():
    header = struct.pack(">HBBIII", 0, 8, 3, 10**6, 28, 28)  # 784 MB promised
    with pytest.raises(PipelineError, match="promises 784000016 bytes .* over the 256 MiB"):
        gunzip_idx(stream(gzip.compress(header + bytes(1000))), 3, "big.gz")


def test_compressed_input_is_capped(monkeypatch):
    monkeypatch.setattr(data_module, "MAX_DOWNLOAD", 2**16)
    noise = np.random.default_rng(0).integers(0, 256, 2**17, dtype=np.uint8)  # incompressible
    with pytest.raises(PipelineError, match="over 65,536 bytes compressed"):
        gunzip_idx(stream(gzip.compress(idx_bytes(noise))), 1, "f")


def test_verify_sha256():
    digest = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"  # sha256(b"hello")
    verify_sha256(b"hello", digest, "f")
    with pytest.raises(PipelineError, match="does not match the pinned 2cf24dba"):
        verify_sha256(b"hellO", digest, "f")


def test_check_arrays():
    good = {"x_train": np.zeros((3, 4, 4), np.uint8), "y_train": np.array([0, 9, 1], np.uint8)}
    good |= {"x_test": good["x_train"][:1], "y_test": good["y_train"][:1]}
    check_arrays(good, 4, "d")
    with pytest.raises(PipelineError, match="3 train images but 2 train labels"):
        check_arrays(good | {"y_train": good["y_train"][:2]}, 4, "d")
    with pytest.raises(PipelineError, match="train label 10 is outside 0-9"):
        check_arrays(good | {"y_train": np.array([0, 10, 1], np.uint8)}, 4, "d")
    with pytest.raises(PipelineError, match=r"images are \(4, 4\), expected \(5, 5\)"):
        check_arrays(good, 5, "d")


def test_load_dataset_from_mirror(mirror):
    root, digests = mirror
    arrays = load_dataset("mnist", [Source(str(root / "mnist"))], digests["mnist"], 28, 1, 1, 0, quiet)
    assert arrays["x_train"].shape == (400, 28, 28) and arrays["x_test"].shape == (100, 28, 28)
    assert arrays["x_train"].dtype == np.uint8
    assert sorted(np.unique(arrays["y_train"])) == list(range(10))


def test_falls_through_to_next_source_and_lists_failures(mirror, tmp_path):
    root, digests = mirror
    bad = tmp_path / "bad"
    shutil.copytree(root / "mnist", bad)
    (bad / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"wrong bytes"))
    sources = [Source(str(tmp_path / "nowhere")), Source(str(bad)), Source(str(root / "mnist"))]
    arrays = load_dataset("mnist", sources, digests["mnist"], 28, 1, 1, 0, quiet)
    assert len(arrays["y_test"]) == 100
    with pytest.raises(PipelineError) as err:
        load_dataset("mnist", sources[:2], digests["mnist"], 28, 1, 1, 0, quiet)
    message = str(err.value)
    assert "could not get mnist from any source" in message
    assert "nowhere/train-images-idx3-ubyte.gz: No such file or directory" in message
    assert "t10k-labels-idx1-ubyte.gz: wrong IDX magic" in message  # the header bounds the stream: read first
    assert "DATA_MIRROR" in message


def test_split_is_seeded_disjoint_and_complete():
    x = np.arange(100, dtype=np.uint8)
    y = x % 10
    x_tr, y_tr, x_val, y_val = split_train_val(x, y, 20, seed=3)
    assert len(x_val) == 20 and len(x_tr) == 80
    assert sorted(np.concatenate([x_tr, x_val]).tolist()) == list(range(100))
    np.testing.assert_array_equal(y_val, x_val % 10)
    np.testing.assert_array_equal(split_train_val(x, y, 20, seed=3)[2], x_val)
    assert not np.array_equal(split_train_val(x, y, 20, seed=4)[2], x_val)
    with pytest.raises(PipelineError, match="base.val_size=100 must be smaller than the 100 training images"):
        split_train_val(x, y, 100, seed=3)
