"""The prepare stage: a folder of class folders (or the downloaded MNIST) as data/target.npz, and bad folders."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import unicodedata
from pathlib import Path

import numpy as np
import pytest

from tests.support import run_stage, set_param, write_image_folder
from tlpipe.core.target import load_target


def prepare(workdir: Path, folder: Path | str, **target) -> subprocess.CompletedProcess:
    """Run the prepare stage in `workdir` (its params.yaml) on `folder`, with `target.*` set from `target`."""
    set_param(workdir / "params.yaml", "target.path", str(folder))
    for key, value in target.items():
        set_param(workdir / "params.yaml", key.replace("__", "."), value)
    return run_stage(workdir, "prepare", "data/target.npz", "metrics/prepare.json")


def assert_refused(result: subprocess.CompletedProcess, workdir: Path, *fragments: str) -> None:
    """One line naming the problem, exit code 1, and neither output written."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors[0].startswith("error: prepare: "), result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    assert not (workdir / "data/target.npz").exists() and not (workdir / "metrics/prepare.json").exists()


def test_a_folder_becomes_the_target(tmp_path, params_file):
    counts = {"b": 6, "a c": 7, "ü": 8}  # a space and a non-ASCII letter in class names
    write_image_folder(tmp_path / "imgs", counts)
    (tmp_path / "imgs" / "a c" / "notes.txt").write_text("not an image")
    (tmp_path / "imgs" / "b" / "notes.txt").write_text("not an image")  # the same stray file in two classes
    (tmp_path / "imgs" / "a c" / ".DS_Store").write_bytes(b"\0hidden")
    (tmp_path / "imgs" / "README.md").write_text("the set\n")
    (tmp_path / "imgs" / "b" / "blank.png").write_bytes((tmp_path / "imgs" / "b" / "b-0.png").read_bytes()[:40])
    result = prepare(tmp_path, tmp_path / "imgs")
    assert result.returncode == 0, result.stderr
    data = load_target(tmp_path / "data/target.npz")
    assert data.classes == ["a c", "b", "ü"]
    assert data.x_train.shape[1:] == (28, 28) and data.x_train.dtype == np.uint8
    report = json.loads((tmp_path / "metrics/prepare.json").read_text())
    for c, (name, n) in enumerate(sorted(counts.items())):
        got = report["images"][name]
        held_out = max(1, round(0.2 * n))  # target.test_fraction of each class, at least one
        assert got["test"] == held_out == int((data.y_test == c).sum()), name
        assert got["val"] >= 1 and got["train"] >= 1 and sum(got.values()) == n, name
    skipped = {Path(s["file"]).name: s["reason"] for s in report["skipped_files"]}
    assert report["skipped"] == 4 and set(skipped) == {"notes.txt", "README.md", "blank.png"}
    assert skipped["README.md"] == "not in a class folder" and "not an image" in skipped["notes.txt"]
    assert set(report["modes"]) == {"L", "RGB", "RGBA", "I;16"}
    assert sum(report["sizes"].values()) == sum(counts.values())
    # MNIST's form, as predict makes it: a light digit on black, its ink within the middle 20x20
    assert data.x_train[:, 0, :].max() < 64 and data.x_train.max() == 255
    # the split is a function of base.seed: a second run writes the same arrays
    first = (tmp_path / "data/target.npz").read_bytes()
    assert prepare(tmp_path, tmp_path / "imgs").returncode == 0
    assert (tmp_path / "data/target.npz").read_bytes() == first


def test_a_test_folder_is_the_test_set(tmp_path, params_file):
    write_image_folder(tmp_path / "imgs", {"x": 3, "y": 2})
    write_image_folder(tmp_path / "imgs" / "test", {"x": 4, "y": 5}, seed=1)
    result = prepare(tmp_path, tmp_path / "imgs", target__preprocess="resize")
    assert result.returncode == 0, result.stderr
    data = load_target(tmp_path / "data/target.npz")
    assert data.classes == ["x", "y"] and np.bincount(data.y_test).tolist() == [4, 5]
    assert len(data.y_train) == 5 and np.bincount(data.y_train[data.val_index]).tolist() == [1, 1]
    # resize: grayscale and resized, polarity as it was (light paper stays light)
    assert data.x_train[:, 0, 0].min() > 150


def test_one_labelled_image_in_a_class_is_trained_and_validated_on(tmp_path, params_file):
    write_image_folder(tmp_path / "imgs", {"a": 1, "b": 1, "c": 4})
    write_image_folder(tmp_path / "imgs" / "test", {"a": 2, "b": 2, "c": 2}, seed=5)
    result = prepare(tmp_path, tmp_path / "imgs")
    assert result.returncode == 0, result.stderr
    assert "one labelled image in class(es) a, b: trained on, and validated on as well" in result.stdout
    data = load_target(tmp_path / "data/target.npz")
    for c in (0, 1):  # the one image of a and of b: in both splits
        assert np.flatnonzero(data.y_train == c).tolist() == [i for i in data.train_index if data.y_train[i] == c] \
            == [i for i in data.val_index if data.y_train[i] == c]
    assert not set(data.train_index[data.y_train[data.train_index] == 2]) & set(data.val_index)  # c: held out
    report = json.loads((tmp_path / "metrics/prepare.json").read_text())
    assert report["validated_on_training_images"] == ["a", "b"]
    write_image_folder(tmp_path / "two", {"a": 1, "b": 4})  # without test/, one image can't be all three
    shutil.rmtree(tmp_path / "data"), shutil.rmtree(tmp_path / "metrics")
    assert_refused(prepare(tmp_path, tmp_path / "two"), tmp_path, "/a: 1 usable image(s); without test/")


def test_unlabelled_images_are_no_class_and_are_counted(tmp_path, params_file):
    files = write_image_folder(tmp_path / "imgs", {"x": 3, "y": 3})
    write_image_folder(tmp_path / "imgs" / "test", {"x": 2, "y": 2}, seed=1)
    write_image_folder(tmp_path / "imgs" / "unlabelled" / "batch 1", {"x": 4, "y": 5}, seed=2)  # any layout inside
    (tmp_path / "imgs" / "unlabelled" / "notes.txt").write_text("not an image")
    shutil.copy(files["y"][0], tmp_path / "imgs" / "unlabelled" / "labelled-already.png")
    shutil.copy(tmp_path / "imgs/unlabelled/batch 1/x/x-0.png", tmp_path / "imgs/unlabelled/twice.png")
    result = prepare(tmp_path, tmp_path / "imgs")
    assert result.returncode == 0, result.stderr
    assert "unlabelled: 9 images read, 3 skipped" in result.stdout
    data = load_target(tmp_path / "data/target.npz")
    assert data.classes == ["x", "y"] and len(data.y_train) == 6 and np.bincount(data.y_test).tolist() == [2, 2]
    report = json.loads((tmp_path / "metrics/prepare.json").read_text())
    assert report["unlabelled"] == {"folder": (tmp_path / "imgs/unlabelled").as_posix(), "read": 9, "skipped": 3}
    reasons = {Path(s["file"]).name: s["reason"] for s in report["skipped_files"]}
    assert "which has a label" in reasons["labelled-already.png"] and "not an image" in reasons["notes.txt"]
    assert "the same file as" in reasons["twice.png"] and sum(report["modes"].values()) == 6 + 4 + 9  # all read


def test_mnist_stays_the_default_target(data_dir, params_file):
    """The downloaded MNIST: base.val_size random images held out, as the stages always split it."""
    from tlpipe.core.data import load_npz, split_train_val

    data = load_target(data_dir / "target.npz")
    mnist = load_npz(data_dir / "mnist.npz")
    expected = split_train_val(mnist["x_train"], mnist["y_train"], 50, 42)  # tiny params: val_size 50, seed 42
    split = data.split()
    for got, want in zip((split.x_train, split.y_train, split.x_val, split.y_val), expected, strict=True):
        np.testing.assert_array_equal(got, want)
    assert data.classes == [str(d) for d in range(10)]


def _empty_class(root: Path) -> None:
    write_image_folder(root, {"a": 3, "b": 3})
    (root / "c").mkdir()


def _unusable_class(root: Path) -> None:
    write_image_folder(root, {"a": 3, "b": 3})
    (root / "c").mkdir()
    (root / "c" / "c.png").write_text("not a PNG")


def _one_class(root: Path) -> None:
    write_image_folder(root, {"only": 5})


def _no_class_folders(root: Path) -> None:
    root.mkdir()
    (root / "a.png").write_bytes(b"")


def _same_file_in_two_classes(root: Path) -> None:
    files = write_image_folder(root, {"a": 3, "b": 3})
    shutil.copy(files["a"][0], root / "b" / "copy.png")


def _same_file_in_training_and_test(root: Path) -> None:
    files = write_image_folder(root, {"a": 3, "b": 3})
    write_image_folder(root / "test", {"a": 1, "b": 1}, seed=5)
    shutil.copy(files["b"][1], root / "test" / "b" / "again.png")


def _unknown_test_class(root: Path) -> None:
    write_image_folder(root, {"a": 3, "b": 3})
    write_image_folder(root / "test", {"a": 1, "z": 1}, seed=5)


def _a_class_missing_from_test(root: Path) -> None:
    write_image_folder(root, {"a": 3, "b": 3})
    write_image_folder(root / "test", {"a": 2}, seed=5)


def _unlabelled_in_test(root: Path) -> None:
    write_image_folder(root, {"a": 3, "b": 3})
    write_image_folder(root / "test", {"a": 1, "b": 1, "unlabelled": 2}, seed=5)


def _a_test_image_among_the_unlabelled(root: Path) -> None:
    write_image_folder(root, {"a": 3, "b": 3})
    files = write_image_folder(root / "test", {"a": 1, "b": 1}, seed=5)
    (root / "unlabelled").mkdir()
    shutil.copy(files["b"][0], root / "unlabelled" / "u.png")


def _a_link_that_points_nowhere(root: Path) -> None:
    write_image_folder(root, {"a": 3, "b": 3})
    (root / "b" / "moved.png").symlink_to(root / "elsewhere.png")


def _a_pipe(root: Path) -> None:
    write_image_folder(root, {"a": 3, "b": 3})
    os.mkfifo(root / "a" / ".pipe")  # hidden from prepare, not from DVC, which would wait on it for ever


def _a_linked_class_folder(root: Path) -> None:
    write_image_folder(root.parent / "elsewhere", {"b": 3})
    write_image_folder(root, {"a": 3})
    (root / "b").symlink_to(root.parent / "elsewhere" / "b")  # DVC would not see a change inside


def _unlabelled_inside_a_class(root: Path) -> None:
    write_image_folder(root, {"a": 3, "b": 3})
    write_image_folder(root / "a" / "Unlabelled", {"x": 2})  # its images would be labelled a


def _a_reserved_name_in_capitals(root: Path) -> None:
    write_image_folder(root, {"a": 3, "b": 3})
    write_image_folder(root / "Test", {"a": 1, "b": 1}, seed=5)  # a class called Test, silently


def _a_name_that_is_not_utf8(root: Path) -> None:
    files = write_image_folder(root, {"a": 3, "b": 3})
    shutil.copy(files["a"][0], os.fsencode(root / "a") + b"/\xff.png")  # DVC fails to hash it


def _too_few_images(root: Path) -> None:
    write_image_folder(root, {"a": 3, "b": 2})  # 2 images: one for the test, one left for training and validation


def _names_written_two_ways(root: Path) -> None:
    write_image_folder(root, {unicodedata.normalize("NFC", "é"): 3, "b": 3})
    write_image_folder(root, {unicodedata.normalize("NFD", "é"): 3}, seed=3)


@pytest.mark.parametrize(("make", "fragments"), [
    (_empty_class, ["/c: class folder is empty"]),
    (_unusable_class, ["/c: class folder has no usable image (", "c/c.png: not an image"]),
    (_one_class, ["one class folder ('only'); a classifier needs at least 2"]),
    (_no_class_folders, ["no class folders"]),
    (_same_file_in_two_classes, ["the same file as", "in classes 'a' and 'b'"]),
    (_same_file_in_training_and_test, ["again.png: the same file as", "in test/ and training"]),
    (_unknown_test_class, ["test/z: a test class with no training folder"]),
    (_a_class_missing_from_test, ["test: no folder for class 'b'; with test/, every class needs test images"]),
    (_unlabelled_in_test, ["test/unlabelled: test images need their labels"]),
    (_a_test_image_among_the_unlabelled, ["unlabelled/u.png: the same file as", "in test/ and unlabelled/"]),
    (_a_link_that_points_nowhere, ["b/moved.png: a link that points nowhere; DVC could not track"]),
    (_a_pipe, ["a/.pipe: not a regular file (a pipe, socket or device); DVC could not track"]),
    (_a_linked_class_folder, ["/b: a link to a folder, which DVC does not follow; copy the folder in instead"]),
    (_unlabelled_inside_a_class, ["a/Unlabelled: a Unlabelled/ folder inside a class folder"]),
    (_a_reserved_name_in_capitals, ["/Test: did you mean test/?"]),
    (_a_name_that_is_not_utf8, ["\\udcff.png': a name that is not valid UTF-8; rename it"]),
    (_too_few_images, ["/b: 2 usable image(s); without test/ each class needs at least 3"]),
    (_names_written_two_ways, ["written two ways (Unicode normalization)"]),
])
def test_a_bad_folder_gets_one_line_and_no_output(tmp_path, params_file, make, fragments):
    make(tmp_path / "imgs")
    assert_refused(prepare(tmp_path, tmp_path / "imgs"), tmp_path, *fragments)


def test_a_missing_folder_or_a_foreign_file_is_named(tmp_path, params_file):
    assert_refused(prepare(tmp_path, tmp_path / "nowhere"), tmp_path, "target.path is", "nowhere, which does not exist")
    (tmp_path / "cifar.npz").write_bytes(b"PK")
    assert_refused(prepare(tmp_path, tmp_path / "cifar.npz"), tmp_path, "a file must be one the download stage writes")


def test_mnist_form_needs_28_pixels(tmp_path, params_file):
    write_image_folder(tmp_path / "imgs", {"a": 3, "b": 3})
    set_param(tmp_path / "params.yaml", "base.image_size", 32)
    assert_refused(prepare(tmp_path, tmp_path / "imgs"), tmp_path,
                   "base.image_size is 32; use target.preprocess: resize")
