"""The prepare stage's reading of params target.path: a download stage's file, or a folder of class folders.

A folder holds one subfolder of images per class, named by its class, searched recursively; `test/` beside them,
with the same class folders, is the test set if present, and `unlabelled/` holds images of those classes without
a label (read, checked and counted; no stage trains on them yet). Files that are not usable images are skipped
and reported; an empty class, a single class, one file in two classes (or in training and test), or anything in
the folder that DVC cannot hash (it is prepare's dependency) is an error.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from tlpipe.apps.images import InputError, files_under, grayscale, open_image, prepare, resize
from tlpipe.core.data import CLASS_NAMES, DATASETS, load_npz, split_indices
from tlpipe.core.errors import PipelineError
from tlpipe.core.params import Base, Target
from tlpipe.core.target import TargetData

TEST_FOLDER = "test"
UNLABELLED = ("unlabelled", "unlabeled")  # either spelling: images of the classes without a label
RESERVED = (TEST_FOLDER, *UNLABELLED)
NOT_HASHED = {".git", ".hg", ".dvc"}  # folders DVC leaves out of a folder's hash
MNIST_SIZE = 28  # target.preprocess: mnist makes MNIST's 28x28 form
LISTED = 50  # files skipped (and image sizes seen) listed by name in the report, at most
MAX_FILE = 64 * 2**20  # bytes: larger files are skipped unread (predict's pixel limit applies to the rest)


def prepare_target(target: Target, base: Base) -> tuple[TargetData, dict]:
    """params `target.*` as a TargetData and the prepare stage's report (what was read, skipped, seen)."""
    path = Path(target.path)
    if path.is_dir():
        return from_folder(path, target, base)
    if path.is_file():
        return from_dataset(path, base)
    if path.suffix == ".npz" and path.stem in DATASETS:
        raise PipelineError(f"{path}: missing; run `dvc repro download` first")
    raise PipelineError(f"params.yaml: target.path is {path}, which does not exist; name data/mnist.npz or a folder "
                        "of class folders")


def from_dataset(path: Path, base: Base) -> tuple[TargetData, dict]:
    """A download stage's file (data/mnist.npz, data/fashion_mnist.npz) with base.val_size random training images
    held out for validation, as the pipeline always split MNIST."""
    name = path.name.removesuffix(".npz")
    if name not in DATASETS or path.suffix != ".npz":
        raise PipelineError(f"params.yaml: target.path is {path}; a file must be one the download stage writes "
                            f"({', '.join(f'data/{n}.npz' for n in DATASETS)}), anything else a folder")
    arrays = load_npz(path)
    train, val = split_indices(len(arrays["y_train"]), base.val_size, base.seed)
    data = TargetData(arrays["x_train"], arrays["y_train"], train, val, arrays["x_test"], arrays["y_test"],
                      CLASS_NAMES[name])
    size, count = "x".join(map(str, data.x_train.shape[1:][::-1])), len(data.y_train) + len(data.y_test)
    return data, make_report(path, data, "dataset", {size: count}, {"L": count}, [], 0)


def holdout(labels: np.ndarray, fraction: float, rng: np.random.Generator, classes: list[str], what: str,
            where: str, single: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(kept, held) indices: `fraction` of each class held out at random, at least one, and at least one kept;
    `single`: a class of one image keeps it and holds it too (kept and held then overlap)."""
    kept, held = [], []
    for c, name in enumerate(classes):
        members = rng.permutation(np.flatnonzero(labels == c))
        if single and len(members) == 1:
            kept.append(members)
            held.append(members)
            continue
        if len(members) < 2:
            raise PipelineError(f"{where}/{name}: {len(members)} usable image(s); each class needs at least 2 here "
                                f"(one for {what}, one for training)")
        n = min(max(1, round(fraction * len(members))), len(members) - 1)
        held.append(members[:n])
        kept.append(members[n:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def from_folder(folder: Path, target: Target, base: Base) -> tuple[TargetData, dict]:
    """A folder of class folders (and optionally test/): every image read, preprocessed and split."""
    if target.preprocess == "mnist" and base.image_size != MNIST_SIZE:
        raise PipelineError(f"params.yaml: target.preprocess: mnist makes {MNIST_SIZE}x{MNIST_SIZE} images, but "
                            f"base.image_size is {base.image_size}; use target.preprocess: resize")
    check_trackable(folder)
    read = FolderReader(folder, target.preprocess, base.image_size)
    folders = read.class_folders(folder)
    classes = list(folders)
    x, y = read.images(folders, classes, "train")
    rng = np.random.default_rng(base.seed)
    has_test = (folder / TEST_FOLDER).is_dir()
    if has_test:
        test_folder = folder / TEST_FOLDER
        test_folders = read.class_folders(test_folder, known=classes)
        missing = [name for name in classes if name not in test_folders]
        if missing:
            raise PipelineError(f"{test_folder}: no folder for class '{missing[0]}'; with test/, every class needs "
                                "test images (add them, or remove test/ to hold out target.test_fraction instead)")
        x_test, y_test = read.images(test_folders, classes, "test")
    unlabelled = read.unlabelled(folder)  # after the labelled images, so that a copy of one of them is found
    if not has_test:
        counts = np.bincount(y, minlength=len(classes))
        if counts.min() < 3:
            name = classes[int(counts.argmin())]
            raise PipelineError(f"{folders[name]}: {counts.min()} usable image(s); without test/ each class needs at "
                                "least 3 (one each for the test set, validation and training)")
        pool, test = holdout(y, target.test_fraction, rng, classes, "the test set", str(folder))
        x, y, x_test, y_test = x[pool], y[pool], x[test], y[test]
    # One labelled image in a class (with test/): it is trained on and is that class's validation image as well,
    # so validation then measures how well the model fits it, not how well it generalises
    train, val = holdout(y, target.val_fraction, rng, classes, "validation", str(folder), single=has_test)
    data = TargetData(x, y, train, val, x_test, y_test, classes)
    report = make_report(folder, data, f"folder, preprocess: {target.preprocess}", dict(read.sizes),
                         dict(read.modes), read.skipped, read.repeated)
    single = [name for c, name in enumerate(classes) if (y == c).sum() == 1]
    if single:
        report["validated_on_training_images"] = single
    if unlabelled:
        report["unlabelled"] = unlabelled
    return data, report


def check_trackable(folder: Path) -> None:
    """Refuse, before anything is written, what DVC cannot track in `folder` (prepare's dependency) and folder names
    that would give images the wrong label: a link that points nowhere or in a loop, a link to a folder (DVC does
    not follow it: a change inside would go unseen), a pipe, socket or device (DVC waits on a pipe for ever), an
    unreadable entry, a name that is not UTF-8; test/ or unlabelled/ anywhere but beside the class folders."""

    def refuse(path: object, problem: str, fix: str = "DVC could not track the folder: remove or fix it") -> None:
        shown = str(path) if str(path).isprintable() else repr(str(path))
        raise PipelineError(f"{shown}: {problem}; {fix}")

    def unreadable(e: OSError) -> None:
        refuse(e.filename or folder, f"cannot read folder ({e.strerror})")

    for parent, dirs, names in os.walk(folder, onerror=unreadable):
        dirs[:] = [d for d in dirs if d not in NOT_HASHED]
        where = Path(parent).relative_to(folder).parts
        for name in dirs:
            path = Path(parent, name)
            if path.is_symlink():
                refuse(path, "a link to a folder, which DVC does not follow", "copy the folder in instead")
            if not where and name.casefold() in RESERVED and name not in RESERVED:
                refuse(path, f"did you mean {name.casefold()}/?", "the reserved folder names are lowercase")
            inside_class = (where and where[0] not in UNLABELLED and not where[0].startswith(".")
                            and (where[0] != TEST_FOLDER or len(where) > 1))
            if name.casefold() in UNLABELLED and where == (TEST_FOLDER,):
                refuse(path, "test images need their labels",
                       f"unlabelled images go in {folder / UNLABELLED[0]}, beside the class folders")
            if name.casefold() in RESERVED and inside_class:
                refuse(path, f"a {name}/ folder inside a class folder, whose images would take that class's label",
                       "move it beside the class folders")
        for name in [*dirs, *names]:
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                refuse(Path(parent, name), "a name that is not valid UTF-8", "rename it")
        for name in names:
            path = Path(parent, name)
            try:
                mode = path.stat().st_mode
            except OSError as e:
                dangling = path.is_symlink() and e.errno == errno.ENOENT
                refuse(path, "a link that points nowhere" if dangling else f"cannot read ({e.strerror})")
            if not stat.S_ISREG(mode):
                refuse(path, "not a regular file (a pipe, socket or device)")
            if not os.access(path, os.R_OK):
                refuse(path, "cannot read (permission denied)")


def make_report(path: Path, data: TargetData, kind: str, sizes: dict, modes: dict, skipped: list[dict],
                repeated: int) -> dict:
    """The prepare stage's report: images per class and split, files skipped and why, sizes and modes seen."""
    counts = {name: {"train": int((data.y_train[data.train_index] == c).sum()),
                     "val": int((data.y_train[data.val_index] == c).sum()),
                     "test": int((data.y_test == c).sum())}
              for c, name in enumerate(data.classes)}
    return {
        "source": path.as_posix(),
        "kind": kind,
        "classes": len(data.classes),
        "images": counts,
        "total": {split: sum(c[split] for c in counts.values()) for split in ("train", "val", "test")},
        "skipped": len(skipped),
        "skipped_files": skipped[:LISTED],
        "duplicates_within_class": repeated,
        "sizes": dict(sorted(sizes.items(), key=lambda item: -item[1])[:LISTED]),
        "modes": dict(sorted(modes.items())),
    }


class FolderReader:
    """Reads class folders into arrays, keeping what the report needs: files skipped and why, sizes and modes
    seen, and the same file twice (an error across classes or between training and test)."""

    def __init__(self, root: Path, preprocess: str, size: int):
        self.root, self.preprocess, self.size = root, preprocess, size
        self.skipped: list[dict] = []
        self.sizes: Counter = Counter()
        self.modes: Counter = Counter()
        self.seen: dict[str, tuple[str, str, Path]] = {}  # file content's SHA-256 -> (class, split, first file)
        self.repeated = 0

    def class_folders(self, folder: Path, known: list[str] | None = None) -> dict[str, Path]:
        """{class name: its folder} of the class folders in `folder`, sorted by name (a class's label is its index
        in the training folders' order). `known`: the training classes, when `folder` is test/."""
        found: dict[str, Path] = {}
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if entry.name.startswith(".") or (known is None and entry.is_dir() and entry.name in RESERVED):
                continue
            if not entry.is_dir():
                self.skip(Path(entry.path), "not in a class folder")
                continue
            name = unicodedata.normalize("NFC", entry.name)  # macOS writes names decomposed (NFD)
            if name in found:
                raise PipelineError(f"{folder}: class folders '{found[name].name}' and '{entry.name}' are one name "
                                    "written two ways (Unicode normalization); merge them")
            found[name] = Path(entry.path)
        if known is not None:
            unknown = [name for name in found if name not in known]
            if unknown:
                raise PipelineError(f"{found[unknown[0]]}: a test class with no training folder of that name in "
                                    f"{self.root}")
            return found
        if not found:
            raise PipelineError(f"{folder}: no class folders (one subfolder of images per class, named by its class)")
        if len(found) < 2:
            raise PipelineError(f"{folder}: one class folder ('{next(iter(found))}'); a classifier needs at least 2")
        return dict(sorted(found.items()))

    def unlabelled(self, root: Path) -> dict | None:
        """Read root/unlabelled/ (or unlabeled/), any layout inside; what was read and skipped, None without one."""
        found = [root / name for name in UNLABELLED if (root / name).is_dir()]
        if len(found) > 1:
            raise PipelineError(f"{root}: both unlabelled/ and unlabeled/; merge them into one")
        if not found:
            return None
        before = len(self.skipped)
        read = sum(self.read(path, None, "unlabelled") is not None for path in files_under(found[0]))
        return {"folder": found[0].as_posix(), "read": read, "skipped": len(self.skipped) - before}

    def skip(self, path: Path, reason: str) -> None:
        self.skipped.append({"file": path.as_posix(), "reason": reason})

    def images(self, folders: dict[str, Path], classes: list[str], split: str) -> tuple[np.ndarray, np.ndarray]:
        """Every usable image in the class folders `folders`, labelled by its class's index in `classes`."""
        images, labels = [], []
        for c, name in enumerate(classes):
            class_dir = folders.get(name)
            if class_dir is None:  # a test/ without this class
                continue
            found = 0
            for path in files_under(class_dir, lambda e: self.skip(Path(e.filename), f"cannot read ({e.strerror})")):
                image = self.read(path, name, split)
                if image is not None:
                    images.append(image)
                    labels.append(c)
                    found += 1
            if not found:
                skipped = [s for s in self.skipped if s["file"].startswith(f"{class_dir.as_posix()}/")]
                why = (f"has no usable image ({skipped[0]['file']}: {skipped[0]['reason']})" if skipped else
                       "is empty")
                fix = "add images or remove it" if split == "train" else "add test images of this class"
                raise PipelineError(f"{class_dir}: {'test ' if split == 'test' else ''}class folder {why}; {fix}")
        x = np.stack(images) if images else np.zeros((0, self.size, self.size), np.uint8)
        return x, np.array(labels, np.int32)

    def read(self, path: Path, name: str | None, split: str) -> np.ndarray | None:
        """One file as a (size, size) uint8 image, or None (skipped, with the reason); `name` None: unlabelled."""
        try:
            if path.stat().st_size > MAX_FILE:
                self.skip(path, f"over {MAX_FILE >> 20} MiB, larger than an image to train on")
                return None
            content = path.read_bytes()
        except OSError as e:
            self.skip(path, f"cannot read ({e.strerror})")
            return None
        try:
            image = open_image(io.BytesIO(content))
            gray = grayscale(image)
            pixels = prepare(gray).image if self.preprocess == "mnist" else resize(gray, self.size)
        except InputError as e:
            self.skip(path, str(e))
            return None
        # only usable images count: the same stray file (Thumbs.db, a blank placeholder) in two classes is skipped
        digest = hashlib.sha256(content).hexdigest()
        if digest in self.seen:
            other_class, other_split, other = self.seen[digest]
            if split == "unlabelled" and other_split == "test":
                raise PipelineError(f"{path}: the same file as {other}, in test/ and unlabelled/; test images are "
                                    "never trained on: remove one")
            if split == "unlabelled":  # a copy of a labelled image, or of another unlabelled one: counted once
                self.skip(path, f"the same file as {other}" + (", which has a label" if other_split == "train" else ""))
                return None
            if (other_class, other_split) != (name, split):
                where = f"classes '{other_class}' and '{name}'" if other_class != name else "test/ and training"
                raise PipelineError(f"{path}: the same file as {other}, in {where}; a file belongs to one class "
                                    "and one split: remove one")
            self.repeated += 1  # the same image twice in one class: kept, and counted in the report
        else:
            self.seen[digest] = (name, split, path)
        with Image.open(io.BytesIO(content)) as header:  # the size as stored (open_image may have reduced it)
            self.sizes[f"{header.width}x{header.height}"] += 1
        self.modes[image.mode] += 1
        return pixels
