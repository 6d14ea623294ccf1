"""Weights on disk keyed by layer name, the by-name transfer, and freezing layers by name.

Keras 3's own `.weights.h5` files key weights by auto-generated class paths (`layers/conv2d_1/...`), not by
layer name, and `load_weights(by_name=True)` only reads legacy files. So weights are stored here as one HDF5
group per layer *name* holding that layer's arrays in `layer.get_weights()` order: plain arrays, no code.
Their names end in `.named.h5`, never `.weights.h5`, so that no Keras user takes them for Keras' own files; the
models for use outside the pipeline are the `export` stage's `.keras` files.
"""

from __future__ import annotations

import re
from pathlib import Path

import h5py
import keras
import numpy as np

from tlpipe.core.errors import PipelineError
from tlpipe.core.io import atomic_path

FORMAT = "tlpipe-named-weights"
VERSION = 1


def save_weights(model: keras.Model, path: str | Path) -> None:
    """Write every layer's weights to `path` (an .h5 file) under the layer's name, atomically."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = FORMAT
        f.attrs["version"] = VERSION
        f.attrs["model"] = model.name
        for layer in model.layers:
            arrays = layer.get_weights()
            if arrays:
                group = f.create_group(layer.name)
                for i, array in enumerate(arrays):
                    group.create_dataset(str(i), data=array)


def read_weights(path: str | Path) -> dict[str, list[np.ndarray]]:
    """Read a file written by save_weights: {layer name: [arrays]}."""
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path}: weights file is missing; run the stage that writes it (`dvc repro`)")
    if path.stat().st_size == 0:
        raise PipelineError(f"{path}: weights file is empty; re-run the stage that writes it (`dvc repro -f`)")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise PipelineError(f"{path}: HDF5 file is not a {FORMAT} file written by this pipeline")
            stored = {name: [group[str(i)][()] for i in range(len(group))] for name, group in f.items()}
    except OSError as e:
        raise PipelineError(f"{path}: not a readable HDF5 weights file ({e})") from e
    for name, arrays in stored.items():
        if not all(np.isfinite(a).all() for a in arrays if np.issubdtype(a.dtype, np.floating)):
            raise PipelineError(f"{path}: layer '{name}' holds NaN or infinite weights; the run that wrote them "
                                "diverged: re-run that stage with a lower learning rate")
    return stored


def _assign(layer: keras.layers.Layer, arrays: list[np.ndarray], path: Path) -> list[str]:
    expected = [tuple(w.shape) for w in layer.weights]
    got = [tuple(a.shape) for a in arrays]
    if expected != got:
        raise PipelineError(
            f"{path}: layer '{layer.name}' has weight shapes {got} in the file but {expected} in the model; "
            "the file comes from a different architecture"
        )
    layer.set_weights(arrays)
    return ["x".join(map(str, s)) for s in got]


def load_weights(model: keras.Model, path: str | Path) -> None:
    """Load a whole model's weights by name; every weighted layer must be in the file with the same shapes."""
    path = Path(path)
    stored = read_weights(path)
    wanted = {layer.name for layer in model.layers if layer.weights}
    if wanted != set(stored):
        missing = sorted(wanted - set(stored))
        extra = sorted(set(stored) - wanted)
        raise PipelineError(
            f"{path}: layers do not match model '{model.name}' (missing: {missing or 'none'}, "
            f"unexpected: {extra or 'none'}); was it written by another stage's model?"
        )
    for layer in model.layers:
        if layer.weights:
            _assign(layer, stored[layer.name], path)


def transfer_by_name(model: keras.Model, path: str | Path, names: list[str]) -> dict:
    """Copy the weights of the layers in `names` from `path` into `model`; return a report of what happened.

    Every name must be a weighted layer of the model and present in the file: nothing is skipped silently.
    """
    path = Path(path)
    stored = read_weights(path)
    weighted = {layer.name for layer in model.layers if layer.weights}
    unknown = [n for n in names if n not in weighted]
    if unknown:
        raise PipelineError(
            f"params.yaml: transfer.layers names '{unknown[0]}', which is not a layer with weights in model "
            f"'{model.name}' (those are: {', '.join(sorted(weighted))})"
        )
    absent = [n for n in names if n not in stored]
    if absent:
        raise PipelineError(f"{path}: has no layer '{absent[0]}' to transfer (it has: {', '.join(sorted(stored))})")
    copied = {n: _assign(model.get_layer(n), stored[n], path) for n in names}
    skipped = {
        layer.name: ("not in source" if layer.name not in stored else "not listed in transfer.layers")
        for layer in model.layers
        if layer.weights and layer.name not in copied
    }
    return {
        "source": path.as_posix(),
        "copied": copied,
        "skipped": skipped,
        "source_unused": sorted(set(stored) - set(copied)),
    }


def set_trainable(model: keras.Model, names: list[str], trainable: bool, key: str) -> None:
    """Set `trainable` on the named layers; a frozen BatchNormalization then runs in inference mode."""
    known = {layer.name for layer in model.layers}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise PipelineError(f"params.yaml: {key} names '{unknown[0]}', which is not a layer of model '{model.name}'")
    for name in names:
        model.get_layer(name).trainable = trainable


def trainable_count(model: keras.Model) -> int:
    """Number of trainable scalars in `model`."""
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def batchnorm_layers(model: keras.Model) -> list[str]:
    """Names of the model's BatchNormalization layers (selected by role, not position)."""
    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]


def block_layers(names: list[str], depth: int) -> list[str]:
    """The layers of `names` in the first `depth` conv blocks (conv1, bn1, ... conv<depth>, bn<depth>, selected by
    the block number that ends their names): what the sweep's depth runs transfer (Yosinski et al. 2014)."""
    if f"conv{depth}" not in names:
        raise PipelineError(f"params.yaml: the sweep run depth{depth} transfers conv1 to conv{depth}, but "
                            f"transfer.layers has no conv{depth}")
    return [n for n in names if (block := re.fullmatch(r"\D+(\d+)", n)) and int(block[1]) <= depth]


def adapt_batchnorm(model: keras.Model, images: np.ndarray, batch_size: int) -> list[str]:
    """AdaBN (Li et al. 2016): set each BatchNormalization's moving mean and variance to those of its inputs over
    `images`, layer by layer in order (each sees the layers before it already adapted); no weight changes.

    Returns the names of the adapted layers.
    """
    import tensorflow as tf

    names = batchnorm_layers(model)
    x = images.reshape(len(images), *model.input.shape[1:])
    for name in names:
        layer = model.get_layer(name)
        inputs = keras.Model(model.input, layer.input)
        run = tf.function(lambda batch, inputs=inputs: inputs(batch, training=False))
        total = total_sq = 0.0
        for i in range(0, len(x), batch_size):
            out = run(tf.constant(x[i : i + batch_size], tf.float32)).numpy().astype(np.float64)
            out = out.reshape(-1, out.shape[-1])  # per channel, over images and positions
            total, total_sq = total + out.sum(axis=0), total_sq + (out**2).sum(axis=0)
        n = len(x) * int(np.prod(layer.input.shape[1:-1]))
        mean = total / n
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(np.maximum(total_sq / n - mean**2, 0.0).astype(np.float32))
    return names
