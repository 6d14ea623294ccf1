import gzip
import shutil

import numpy as np
import pytest

from tests.support import idx_bytes
from tlpipe.data import Source, check_arrays, gunzip, load_dataset, parse_idx, split_train_val, verify_sha256
from tlpipe.errors import PipelineError


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


def test_gunzip_errors():
    data = gzip.compress(b"hello" * 100)
    assert gunzip(data, "f") == b"hello" * 100
    with pytest.raises(PipelineError, match="f: empty file"):
        gunzip(b"", "f")
    with pytest.raises(PipelineError, match="not a valid gzip"):
        gunzip(data[: len(data) // 2], "f")  # truncated
    with pytest.raises(PipelineError, match="not a valid gzip"):
        gunzip(b"this is not gzip", "f")


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
    assert "t10k-labels-idx1-ubyte.gz: payload SHA-256" in message
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
