"""Training: determinism, input pipelines, optimizers and the fit loop every training stage uses."""

from __future__ import annotations

import functools
import math
import re
import time
import weakref
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf
from dvclive.keras import DVCLiveCallback

from tlpipe.core.data import Data, load_npz, split_train_val
from tlpipe.core.errors import PipelineError
from tlpipe.core.io import check_writable, pending, write_json
from tlpipe.core.live import cpu_model, log_run, open_live
from tlpipe.core.params import Base, Train
from tlpipe.core.transfer import save_weights


def make_deterministic(seed: int, ops: bool = True) -> None:
    """Seed Python, NumPy and TensorFlow and (`ops`, params base.deterministic) make TF ops deterministic, so
    reruns give the same numbers."""
    keras.utils.set_random_seed(seed)
    if ops:
        tf.config.experimental.enable_op_determinism()


@contextmanager
def deterministic_kernels():
    """Turn TensorFlow's error for an op with no deterministic kernel (GPUs have a few) into one line naming the
    param that allows it."""
    try:
        yield
    except tf.errors.UnimplementedError as e:
        # e.g. "{{function_node ...GPU:0}} A deterministic GPU implementation of AdjustContrastv2 is not
        # currently available. [Op:AdjustContrastv2]": keep the sentence
        found = re.search(r"[^.{}\n]*eterministic[^.\n]*", str(e.message))
        if not found:
            raise
        raise PipelineError(
            f"TensorFlow has no deterministic kernel for an op on this device ({found.group().strip()}); set "
            "base.deterministic: false in params.yaml to run it anyway (reruns are then not bit-identical)"
        ) from e


def training_devices(model: keras.Model) -> dict[str, str]:
    """The devices that hold `model`'s weights, which TensorFlow trains on, with their names.

    E.g. {"CPU:0": "AMD EPYC"} or {"GPU:0": "NVIDIA A100-SXM4-40GB"}.
    """
    used = sorted({v.value.device.rsplit("device:", 1)[-1] for v in model.weights})
    names = {}
    for device in used:
        kind, index = device.split(":")
        name = cpu_model()
        if kind == "GPU":
            details = tf.config.experimental.get_device_details(tf.config.list_physical_devices("GPU")[int(index)])
            name = details.get("device_name", "GPU")
        names[device] = name
    return names


# By default (make_dataset's in_place), arrays above this size (cached features: GBs) are gathered from NumPy in
# place: a TensorFlow copy would double their memory. Smaller ones (images) keep the all-TensorFlow gather, which
# holds no GIL in the input pipeline.
IN_PLACE_BYTES = 256 * 2**20


def shift_and_flip(images: tf.Tensor, shift: int, flip: bool, seed: tf.Tensor) -> tf.Tensor:
    """Shift each image by up to `shift` pixels each way (pad with 0, then crop), and flip half left-right.

    Stateless random numbers from `seed` (the run's seed and the batch's index), so the same batch is
    augmented the same way in every run, whatever the input pipeline's threading.
    """
    if flip:
        flips = tf.random.stateless_uniform((tf.shape(images)[0],), seed=seed + 1) < 0.5
        images = tf.where(flips[:, None, None, None], tf.reverse(images, axis=[2]), images)
    if shift:
        height, width = images.shape[1], images.shape[2]
        padded = tf.pad(images, [[0, 0], [shift, shift], [shift, shift], [0, 0]])
        offsets = tf.random.stateless_uniform(
            (tf.shape(images)[0], 2), seed=seed, minval=0, maxval=2 * shift + 1, dtype=tf.int32
        )
        rows = offsets[:, :1] + tf.range(height)[None]
        cols = offsets[:, 1:] + tf.range(width)[None]
        images = tf.gather(tf.gather(padded, rows, batch_dims=1), cols, axis=2, batch_dims=1)
    return images


def make_dataset(
    x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None = None, repeat: bool = False,
    shift: int = 0, flip: bool = False, in_place: bool | None = None,
) -> tf.data.Dataset:
    """Batches of (float32 inputs, labels), reshuffled every epoch when seeded; endless when `repeat`.

    Shuffles indices and gathers whole batches: no per-example copies into a shuffle buffer, one cast per
    batch. Both gather paths give the same batches. `shift` and `flip` augment each batch (needs a seed).
    `in_place`: gather from the NumPy arrays themselves (True) or from a TensorFlow copy (False); by default only
    arrays above IN_PLACE_BYTES are gathered in place.
    """
    if (shift or flip) and shuffle_seed is None:
        raise ValueError("augmentation needs a shuffle_seed")
    order = tf.data.Dataset.range(len(x))
    if shuffle_seed is not None:
        order = order.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    if repeat:
        order = order.repeat()
    shape = (*x.shape[1:], 1) if x.ndim == 3 else x.shape[1:]  # images get a channel axis

    if in_place is None:
        in_place = x.nbytes > IN_PLACE_BYTES
    if in_place:
        # tf.numpy_function keeps `take` for the life of the process (TensorFlow ties it to the global graph), so
        # `take` reaches the arrays only through `source`, emptied once the dataset is gone (its iterators keep it)
        source = [x, y]
        weakref.finalize(order, source.clear)

        def take(index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            images, labels = source
            return images[index].astype(np.float32, copy=False).reshape(len(index), *shape), labels[index]

        def gather(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            batch, labels = tf.numpy_function(take, [index], (tf.float32, tf.as_dtype(y.dtype)), stateful=False)
            batch.set_shape((None, *shape))
            labels.set_shape((None,))
            return batch, labels

    else:
        inputs, targets = tf.constant(x), tf.constant(y)

        def gather(index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            batch = tf.reshape(tf.cast(tf.gather(inputs, index), tf.float32), (-1, *shape))
            return batch, tf.gather(targets, index)

    batches = order.batch(batch_size)
    if shift or flip:

        def augmented(step: tf.Tensor, index: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            batch, labels = gather(index)
            seed = tf.stack([tf.constant(shuffle_seed, tf.int64), step])
            return shift_and_flip(batch, shift, flip, seed), labels

        batches = batches.enumerate().map(augmented, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        batches = batches.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    # tf.data's autotuning off: with it on, a fit sometimes spent seconds in the input pipeline's teardown after
    # its last step, and no epoch ran faster (docs/performance.md).
    options = tf.data.Options()
    options.autotune.enabled = False
    return batches.prefetch(tf.data.AUTOTUNE).with_options(options)


@dataclass(frozen=True)
class Recipe:
    """How a model trains, whatever it trains on: Adam at peak rate `lr` under `schedule` (constant, or cosine
    decay to 0 after a linear `warmup` over that share of the steps), `label_smoothing`, and augmentation of the
    training batches (`shift` pixels each way, left-right `flip`). Every phase and every sweep run is one."""

    lr: float
    schedule: str = "cosine"
    warmup: float = 0.0
    label_smoothing: float = 0.0
    shift: int = 0
    flip: bool = False
    lr_key: str = "lr"  # the params key of `lr`, for messages

    @classmethod
    def of(cls, phase: Train, key: str) -> Recipe:
        """The Recipe of params section `key` (pretrain, frozen_head, ...)."""
        return cls(phase.lr, phase.schedule, phase.warmup, phase.label_smoothing, phase.shift,
                   getattr(phase, "flip", False), f"{key}.lr")


class Schedule(keras.optimizers.schedules.LearningRateSchedule):
    """A Recipe's learning rate at each step, with its settings in variables: one compiled model can then train
    run after run, each with its own length, without tracing its functions again (Trainer)."""

    def __init__(self):
        super().__init__()
        self.peak = keras.Variable(0.0, trainable=False, name="lr_peak")
        self.warmup_steps = keras.Variable(0.0, trainable=False, name="lr_warmup_steps")
        self.decay_steps = keras.Variable(1.0, trainable=False, name="lr_decay_steps")
        self.cosine = keras.Variable(1.0, trainable=False, name="lr_cosine")  # 0: constant
        # Keras' own cosine with warm-up: with 0 warm-up steps the same numbers as its plain cosine
        self._cosine = keras.optimizers.schedules.CosineDecay(
            0.0, self.decay_steps, warmup_target=self.peak, warmup_steps=self.warmup_steps
        )

    def start(self, recipe: Recipe, total_steps: int) -> None:
        """Begin a run of `total_steps` steps."""
        cosine = recipe.schedule == "cosine"
        warm = min(round(recipe.warmup * total_steps), total_steps - 1) if cosine else 0  # >= 1 step of decay
        self.peak.assign(recipe.lr)
        self.warmup_steps.assign(float(warm))
        self.decay_steps.assign(float(max(total_steps - warm, 1)))
        self.cosine.assign(1.0 if cosine else 0.0)

    def __call__(self, step):
        return keras.ops.where(keras.ops.greater(self.cosine, 0.0), self._cosine(step), self.peak)


def smoothed_crossentropy(label_smoothing: float, num_classes: int):
    """Cross-entropy on integer labels with label smoothing (Keras' sparse loss has no smoothing)."""

    def loss(y_true, y_pred):
        one_hot = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, (-1,)), "int32"), num_classes)
        return keras.losses.categorical_crossentropy(one_hot, y_pred, label_smoothing=label_smoothing)

    return loss


class Trainer:
    """The one training engine: `model` compiled once under `recipe`, trained by epochs (the pipeline's phases)
    or by steps (the sweep's runs, many per Trainer).

    A compile traces the train, test and predict functions anew on first use (seconds, on a sweep run's scale:
    docs/performance.md), so a run starts instead from `start`: a fresh model's variables (weights, BatchNorm
    statistics, the dropout's seed state), Adam's slots and step count at zero, and the schedule set for the
    run's length. `steps_per_execution` steps run per call into the graph. `in_place` is make_dataset's.
    """

    def __init__(self, model: keras.Model, recipe: Recipe, steps_per_execution: int = 1,
                 in_place: bool | None = None):
        self.model, self.recipe, self.in_place = model, recipe, in_place
        self.steps_per_execution = steps_per_execution
        self.schedule = Schedule()
        classes = model.output.shape[-1]
        loss = (smoothed_crossentropy(recipe.label_smoothing, classes) if recipe.label_smoothing
                else "sparse_categorical_crossentropy")
        model.compile(optimizer=keras.optimizers.Adam(self.schedule), loss=loss, metrics=["accuracy"],
                      steps_per_execution=steps_per_execution)

    @functools.cached_property
    def tester(self) -> keras.Model:
        """The model's layers and variables in an uncompiled model, which predicts one batch per graph call:
        Keras unrolls steps_per_execution predict steps into one graph, which keeps hundreds of MB more memory
        (docs/performance.md)."""
        return keras.Model(self.model.input, self.model.output, name=f"{self.model.name}_tester")

    def load(self, fresh: keras.Model) -> None:
        """Take every variable of `fresh`, a model of the same architecture built for the run."""
        for mine, theirs in zip(self.model.variables, fresh.variables, strict=True):
            mine.assign(theirs)

    def start(self, total_steps: int, fresh: keras.Model | None = None) -> None:
        """Begin a run of `total_steps` steps: `fresh`'s variables (if given), Adam's state as a new compile
        would make it, and the schedule over the run."""
        if fresh is not None:
            self.load(fresh)
        for slot in self.model.optimizer.variables:  # what a new compile's optimizer would start from
            slot.assign(np.zeros(slot.shape, slot.dtype))
        self.schedule.start(self.recipe, total_steps)

    def _dataset(self, x, y, batch_size, seed=None, repeat=False, train=False):
        augment = {"shift": self.recipe.shift, "flip": self.recipe.flip} if train else {}
        return make_dataset(x, y, batch_size, shuffle_seed=seed, repeat=repeat, in_place=self.in_place, **augment)

    def fit_epochs(self, data: Data, epochs: int, batch_size: int, seed: int, callbacks=(), verbose: int = 0,
                   first_epoch: int = 1, min_steps: int = 1) -> None:
        """Train for `epochs` passes over the training images, validating after each, and at least `min_steps`
        steps: an epoch of a small dataset goes round its images more than once, in batches no larger than it.
        Layers set untrainable (a frozen extractor) stay as they are."""
        batch_size = min(batch_size, len(data.x_train))
        per_pass = math.ceil(len(data.x_train) / batch_size)
        per_epoch = max(per_pass, math.ceil(min_steps / epochs))
        self.start(epochs * per_epoch)
        rounds = per_epoch > per_pass  # one pass per epoch (the whole of MNIST) keeps the dataset's epochs
        with deterministic_kernels():
            self.model.fit(
                self._dataset(data.x_train, data.y_train, batch_size, seed, repeat=rounds, train=True),
                validation_data=self._dataset(data.x_val, data.y_val, batch_size),
                epochs=epochs,
                steps_per_epoch=per_epoch if rounds else None,
                callbacks=[FiniteLoss(self.recipe.lr_key, first_epoch), *callbacks],
                shuffle=False,  # the dataset reshuffles itself, seeded
                verbose=verbose,
            )

    def fit_steps(self, data: Data, steps: int, batch_size: int, seed: int, fresh: keras.Model | None = None,
                  first_step: int = 0) -> dict:
        """Train for `steps` optimizer steps from `fresh`, validating after every call into the graph
        (steps_per_execution steps; `steps` must be a multiple). `first_step` counts on from an earlier phase, for
        messages.

        Model selection on the validation split only: the model ends with the weights of the best validation
        accuracy seen, the starting weights included. Returns that accuracy, its step and the `curve` of
        [step, validation accuracy] pairs from step 0 (with no validation images, None, the last step and no curve).
        """
        every = self.steps_per_execution
        if steps % every:
            raise ValueError(f"steps={steps} is not a multiple of steps_per_execution={every}")
        self.start(steps, fresh)
        finite = FiniteLoss(self.recipe.lr_key, steps_per_round=every, first_step=first_step)

        def train():
            return self._dataset(data.x_train, data.y_train, batch_size, seed, repeat=True, train=True)

        if not len(data.x_val):  # one label per class leaves none to validate on: the last weights are the run's
            with deterministic_kernels():
                self.model.fit(train(), epochs=steps // every, steps_per_epoch=every, shuffle=False, verbose=0,
                               callbacks=[finite])
            return {"val_accuracy": None, "best_step": steps, "curve": None}
        val = self._dataset(data.x_val, data.y_val, batch_size)
        start = float(self.model.evaluate(val, verbose=0, return_dict=True)["accuracy"])
        best = BestWeights(start, every)
        with deterministic_kernels():
            self.model.fit(train(), validation_data=val, epochs=steps // every, steps_per_epoch=every, shuffle=False,
                           verbose=0, callbacks=[finite, best])
        curve = [[first_step + step, round(accuracy, 6)] for step, accuracy in best.curve]
        return {"val_accuracy": round(best.best_accuracy, 6), "best_step": best.best_step, "curve": curve}


class FiniteLoss(keras.callbacks.Callback):
    """Stop with a PipelineError once a loss is no longer finite, naming the epoch (or step) and the learning rate
    to lower: a run past that point saves NaN weights, and model selection silently keeps its starting point."""

    def __init__(self, lr_key: str, first_epoch: int = 1, steps_per_round: int | None = None, first_step: int = 0):
        super().__init__()
        self.lr_key, self.first_epoch, self.steps_per_round = lr_key, first_epoch, steps_per_round
        self.first_step = first_step

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        bad = sorted(key for key, value in (logs or {}).items() if "loss" in key and not math.isfinite(float(value)))
        if bad:
            when = (f"by step {self.first_step + (epoch + 1) * self.steps_per_round}" if self.steps_per_round
                    else f"in epoch {epoch + self.first_epoch}")
            raise PipelineError(f"training diverged: {' and '.join(bad)} not finite {when}; lower {self.lr_key} "
                                "(nothing was written)")


class BestWeights(keras.callbacks.Callback):
    """Remember the weights with the best validation accuracy (ties: the later one) and restore them at the end.

    The starting weights are a candidate too, with `start_accuracy`. `curve` keeps every (step, accuracy).
    """

    def __init__(self, start_accuracy: float, steps_per_round: int):
        super().__init__()
        self.steps_per_round = steps_per_round
        self.best_accuracy = start_accuracy
        self.best_step = 0
        self.best_weights = None
        self.curve = [(0, start_accuracy)]

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.best_weights = self.model.get_weights()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        accuracy = float(logs["val_accuracy"])
        self.curve.append(((epoch + 1) * self.steps_per_round, accuracy))
        if accuracy >= self.best_accuracy:
            self.best_accuracy, self.best_step = accuracy, (epoch + 1) * self.steps_per_round
            self.best_weights = self.model.get_weights()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.model.set_weights(self.best_weights)


def fit(
    model: keras.Model, data: Data, phase: Train, batch_size: int, seed: int, live, first_epoch: int = 1,
    key: str = "", min_steps: int = 1,
) -> float:
    """Train `model` for one pipeline phase (`phase.epochs` epochs of its Recipe, params section `key`, at least
    `min_steps` steps); log to `live`; return the wall seconds taken. Epochs are logged by DVCLive's Keras callback
    with step = epoch number, counted on from `first_epoch`."""
    start = time.perf_counter()
    trainer = Trainer(model, Recipe.of(phase, key))
    live.step = first_epoch
    trainer.fit_epochs(data, phase.epochs, batch_size, seed, [DVCLiveCallback(live=live)], verbose=2,
                       first_epoch=first_epoch, min_steps=min_steps)
    return time.perf_counter() - start


def evaluate(model: keras.Model, x: np.ndarray, y: np.ndarray, batch_size: int) -> dict:
    """Test accuracy, mean cross-entropy and per-image predictions of `model` on (x, y), in one pass."""
    with deterministic_kernels():
        probs = model.predict(make_dataset(x, y, batch_size), verbose=0)
    picked = np.clip(probs[np.arange(len(y)), y.astype(np.int64)], 1e-7, 1.0)
    predicted = probs.argmax(axis=1)
    return {
        "test_accuracy": round(float((predicted == y).mean()), 6),
        "test_loss": round(float(-np.log(picked).mean()), 6),
        "predicted": predicted,
    }


def load_train_val(path: Path, base: Base) -> Data:
    """A dataset's training arrays split into training and validation parts by `base.val_size` and `base.seed`."""
    arrays = load_npz(path)
    return Data(*split_train_val(arrays["x_train"], arrays["y_train"], base.val_size, base.seed))


def train_and_save(
    model: keras.Model, data: Data, phase: Train, base: Base, logs: Path, weights_out: Path,
    *, key: str, first_epoch: int = 1, batch_size: int | None = None,
    report: tuple[Path, dict] | None = None,
) -> None:
    """Train one phase (params section `key`) with DVCLive logs (its wall time and devices too) in `logs`, then
    save the weights by layer name, and `report` (path, content) as JSON before them. Batches of `batch_size`
    images, by default `base.batch_size`. Every output is checked for writability first; if training fails, the
    logs DVCLive wrote as it went are removed and nothing else is written."""
    check_writable(logs, weights_out, *([report[0]] if report else []))
    with pending(logs), open_live(logs) as live:  # DVCLive writes as it goes: removed if training fails
        seconds = fit(model, data, phase, batch_size or base.batch_size, base.seed, live, first_epoch, key=key,
                        min_steps=base.min_steps)
        log_run(live, seconds, training_devices(model))
    if report:
        write_json(*report)
    save_weights(model, weights_out)
