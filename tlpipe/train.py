"""Training: determinism, input pipelines, optimizers and the fit loop every training stage uses."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tlpipe.data import load_npz, split_train_val
from tlpipe.errors import PipelineError
from tlpipe.live import log_train_seconds, open_live
from tlpipe.model import split_at_features
from tlpipe.params import Base, Train
from tlpipe.transfer import save_weights


def make_deterministic(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow and make TF ops deterministic, so reruns give the same numbers."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def make_dataset(x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None = None) -> tf.data.Dataset:
    """Batches of (float32 inputs, int labels), reshuffled every epoch when seeded.

    Shuffles indices and gathers whole batches: no per-example copies into a shuffle buffer (which for
    cached 5880-wide features would double memory), one vectorised cast per batch.
    """
    inputs, labels = tf.constant(x), tf.constant(y)
    order = tf.data.Dataset.range(len(x))
    if shuffle_seed is not None:
        order = order.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)

    def gather(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        batch = tf.cast(tf.gather(inputs, index), tf.float32)
        if batch.shape.rank == 3:  # images without a channel axis
            batch = batch[..., None]
        return batch, tf.gather(labels, index)

    return order.batch(batch_size).map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def compile_model(model: keras.Model, phase: Train, steps_per_epoch: int) -> None:
    """(Re-)compile with Adam and the phase's schedule; needed after any change of `trainable`."""
    lr: float | keras.optimizers.schedules.LearningRateSchedule = phase.lr
    if phase.schedule == "cosine":
        lr = keras.optimizers.schedules.CosineDecay(phase.lr, decay_steps=phase.epochs * steps_per_epoch)
    model.compile(
        optimizer=keras.optimizers.Adam(lr),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )


class LiveLogger(keras.callbacks.Callback):
    """Log each epoch's train/validation loss and accuracy to DVCLive, with step = epoch number."""

    def __init__(self, live, first_epoch: int):
        super().__init__()
        self.live = live
        self.live.step = first_epoch

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
            self.live.log_metric(key, float(logs[key]))
        self.live.next_step()


@dataclass
class Data:
    """Training and validation arrays (images uint8 HxW, labels uint8)."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray


def fit(model: keras.Model, data: Data, phase: Train, batch_size: int, seed: int, live, first_epoch: int = 1) -> float:
    """Compile and train `model` for `phase.epochs` epochs; log to `live`; return the wall seconds taken."""
    start = time.perf_counter()
    steps = math.ceil(len(data.x_train) / batch_size)
    compile_model(model, phase, steps)
    model.fit(
        make_dataset(data.x_train, data.y_train, batch_size, shuffle_seed=seed),
        validation_data=make_dataset(data.x_val, data.y_val, batch_size),
        epochs=phase.epochs,
        callbacks=[LiveLogger(live, first_epoch)],
        shuffle=False,  # the dataset reshuffles itself, seeded
        verbose=2,
    )
    return time.perf_counter() - start


def fit_head_on_features(
    model: keras.Model, data: Data, phase: Train, batch_size: int, seed: int, live, first_epoch: int = 1
) -> float:
    """Train only the head, on extractor outputs computed once per image.

    Exact when the extractor is frozen with BatchNormalization in inference mode: the extractor is then a
    fixed function, so running it every epoch would recompute the same features. Same shuffle seed and
    batches as `fit`, so the head sees the same updates.
    """
    start = time.perf_counter()
    extractor, head = split_at_features(model)
    if extractor.trainable_weights:
        trainable = sorted({w.path.split("/")[0] for w in extractor.trainable_weights})
        raise PipelineError(
            f"params.yaml: frozen_head.cache_features needs the whole extractor frozen, but {trainable} "
            "are not in transfer.freeze; add them or set frozen_head.cache_features: false"
        )

    def features(x: np.ndarray) -> np.ndarray:
        return extractor.predict(make_dataset(x, np.zeros(len(x), np.uint8), batch_size), verbose=0)

    cached = Data(features(data.x_train), data.y_train, features(data.x_val), data.y_val)
    fit(head, cached, phase, batch_size, seed, live, first_epoch)
    return time.perf_counter() - start


def load_train_val(path: Path, base: Base) -> Data:
    """A dataset's training arrays split into training and validation parts by `base.val_size` and `base.seed`."""
    arrays = load_npz(path)
    return Data(*split_train_val(arrays["x_train"], arrays["y_train"], base.val_size, base.seed))


def train_and_save(
    model: keras.Model, data: Data, phase: Train, base: Base, logs: Path, weights_out: Path,
    first_epoch: int = 1, head_only: bool = False,
) -> None:
    """Train one phase with DVCLive logs (and its wall time) in `logs`, then save the weights by layer name."""
    train = fit_head_on_features if head_only else fit
    with open_live(logs) as live:
        seconds = train(model, data, phase, base.batch_size, base.seed, live, first_epoch)
        log_train_seconds(live, seconds)
    save_weights(model, weights_out)
