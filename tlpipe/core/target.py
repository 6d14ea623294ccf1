"""The target dataset as one array file, data/target.npz, which the prepare stage writes (tlpipe.apps.folder).

It holds every labelled training image (`x_train`, `y_train`), the validation split as indices into them
(`val_index`, the rest in `train_index`), the test set and the class names. The transfer and scratch stages and the
sweep read only it.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tlpipe.core.data import Data, save_npz
from tlpipe.core.errors import PipelineError


@dataclass
class TargetData:
    """The labelled pool (`x_train`, `y_train`), its validation split as indices, the test set and class names."""

    x_train: np.ndarray
    y_train: np.ndarray
    train_index: np.ndarray
    val_index: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: list[str]

    def split(self) -> Data:
        """The training and validation arrays."""
        x, y = self.x_train, self.y_train
        return Data(x[self.train_index], y[self.train_index], x[self.val_index], y[self.val_index])

    def arrays(self) -> dict[str, np.ndarray]:
        """The dataset arrays as the download stage's files hold them (the sweep draws its budgets from these)."""
        return {"x_train": self.x_train, "y_train": self.y_train, "x_test": self.x_test, "y_test": self.y_test}


def input_form(path: str, preprocess: str) -> str:
    """How the target's images were made, for predict: a download stage's file is in MNIST's form already, a
    folder's images in the form of params target.preprocess (mnist or resize)."""
    return "mnist" if path.endswith(".npz") else preprocess


def save_target(path: str | Path, data: TargetData) -> None:
    """Write `data` as data/target.npz (atomically; class names as a string array, no pickles)."""
    save_npz(path, data.arrays() | {"train_index": data.train_index, "val_index": data.val_index,
                                    "classes": np.array(data.classes, dtype=str)})


KEYS = ("x_train", "y_train", "train_index", "val_index", "x_test", "y_test", "classes")


def _read(path: str | Path, keys: tuple[str, ...] = KEYS) -> dict[str, np.ndarray]:
    """`keys` of data/target.npz (never unpickles); PipelineError naming the file and the fix."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            if set(f.files) != set(KEYS):
                raise PipelineError(f"{path}: holds {sorted(f.files)}, expected {sorted(KEYS)}; run "
                                    "`dvc repro -f prepare`")
            return {key: f[key] for key in keys}
    except FileNotFoundError as e:
        raise PipelineError(f"{path}: missing; run `dvc repro prepare` first") from e
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise PipelineError(f"{path}: not a readable .npz ({e}); run `dvc repro -f prepare`") from e


def load_target(path: str | Path) -> TargetData:
    """Read data/target.npz, written by the prepare stage."""
    arrays = _read(path)
    classes = [str(c) for c in arrays.pop("classes")]
    return TargetData(classes=classes, **arrays)


def target_classes(path: str | Path) -> list[str]:
    """The class names in data/target.npz, without reading its images."""
    return [str(c) for c in _read(path, ("classes",))["classes"]]
