"""Training the label-budget sweep's points (tlpipe.sweep has the subsets, the budget rule and the statistics).

Kept apart from tlpipe.sweep so that aggregating the points (data_efficiency) does not depend on training code.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path

import keras
import numpy as np

from tlpipe.errors import PipelineError
from tlpipe.model import build_model
from tlpipe.params import SWEEP_RUNS, Params
from tlpipe.sweep import budget_rule, labelled_order, split_budget, split_steps
from tlpipe.train import (
    Data,
    cache_features,
    deterministic_kernels,
    evaluate,
    make_dataset,
    make_deterministic,
    training_devices,
)
from tlpipe.transfer import set_trainable, transfer_by_name


def run_points(
    runs: list[str], budgets: list[int], seed: int, params: Params, arrays: dict, source_weights: Path | None
) -> list[dict]:
    """Train the sweep points (run, budget, `seed`) for each of `runs` and `budgets` in this process; return
    their records, budget by budget.

    Each point starts from `make_deterministic(seed)` and a freshly built model's variables, so its record is the
    one it would get alone. What the points share is computed once: for transfer and frozen the frozen
    extractor's features of the seed's labelled order up to the largest budget (the same transferred weights, so
    the same features; a budget's split is a prefix of that order, so its features are slices of them), and the
    compiled models with their traced functions (Trainer).
    """
    unknown = [run for run in runs if run not in SWEEP_RUNS]
    if unknown:
        raise PipelineError(f"sweep run must be one of {list(SWEEP_RUNS)}, got {unknown[0]!r}")
    if source_weights is None and any(run != "scratch" for run in runs):
        raise PipelineError("the transfer and frozen sweep runs need the Fashion weights (--source-weights)")
    cfg = params.sweep
    x, y = arrays["x_train"], arrays["y_train"]
    # seconds: the work shared by all points (splits, features), split among them at the end
    shared = {"seconds": 0.0, "images": x, "labels": y, "largest": max(budgets)}
    split_budget(y, max(budgets), seed, cfg)  # a budget larger than the data fails before any training
    records = []
    for budget in budgets:
        started = time.perf_counter()
        train, val = split_budget(y, budget, seed, cfg)
        data = Data(x[train], y[train], x[val], y[val])
        batch, steps = budget_rule(len(train), cfg)
        shared["seconds"] += time.perf_counter() - started
        for run in runs:
            started, shared_before = time.perf_counter(), shared["seconds"]
            record = {"run": run, "budget": budget, "seed": seed, "n_train": len(train), "n_val": len(val),
                      "batch_size": batch, "steps": steps}
            whole = _train_point(run, data, batch, steps, seed, params, source_weights, shared, record)
            record["test_accuracy"] = evaluate(whole.tester, arrays["x_test"], arrays["y_test"], 512)["test_accuracy"]
            record["devices"] = training_devices(whole.model)
            # this point's own time: the shared work it did (the features) is counted once, below, for all
            record["seconds"] = time.perf_counter() - started - (shared["seconds"] - shared_before)
            records.append(record)
    for record in records:  # the shared work, in equal parts
        record["seconds"] = round(record["seconds"] + shared["seconds"] / len(records), 2)
    return records


def _features(shared: dict, model: keras.Model, data: Data, seed: int, params: Params) -> tuple[Trainer, Data]:
    """The head's Trainer and `data`'s features: the frozen extractor run once, on the seed's labelled order up to
    the largest budget (the first `len(data.x_val)` images are the budget's validation split, the rest up to the
    budget its training set: split_budget)."""
    if "features" not in shared:
        started = time.perf_counter()
        order = labelled_order(shared["labels"], seed)[: shared["largest"]]
        images = Data(shared["images"][order], shared["labels"][order], data.x_val[:0], data.y_val[:0])
        # frozen for the features only: the whole model stays trainable, as its train function was traced
        set_trainable(model, params.transfer.freeze, False, "transfer.freeze")
        head, shared["features"] = cache_features(model, images, params.sweep.batch_size, "the sweep's frozen phase")
        set_trainable(model, params.transfer.freeze, True, "transfer.freeze")
        shared["head"] = Trainer(head, params.sweep.head_lr, params.sweep.schedule, params.sweep.eval_every)
        shared["seconds"] += time.perf_counter() - started
    features, n_val, n = shared["features"], len(data.x_val), len(data.x_val) + len(data.x_train)
    return shared["head"], Data(features.x_train[n_val:n], data.y_train, features.x_train[:n_val], data.y_val)


class Trainer:
    """A model compiled once and trained by every point of a stage, so its functions are traced once.

    Keras traces a model's train, test and predict functions on their first use, about 1.7 s per run of the
    budget rule's steps (benchmarks/profiles.md); a new model or a new `compile` traces them again. Here a run
    gets its own starting state instead: `load` copies every variable of a freshly built model into this one
    (weights, BatchNorm statistics, the dropout's seed state), each `train` zeroes Adam's slots and step count,
    and the cosine schedule's length is a variable. `eval_every` steps run per call into the graph
    (steps_per_execution). `tester`, the same layers in a model of its own, predicts one batch per call: Keras
    unrolls steps_per_execution predict steps into one graph, which kept about 540 MB more after three passes
    over MNIST's test set in batches of 512 (benchmarks/profiles.md). Every dataset gathers from the arrays in
    place: a TensorFlow copy per run (make_dataset's default below 256 MB) copied a budget's features again.
    """

    def __init__(self, model: keras.Model, lr: float, schedule: str, eval_every: int):
        self.model, self.eval_every, self.lr, self.schedule = model, eval_every, lr, schedule
        self.decay_steps = keras.Variable(1.0, trainable=False, name="decay_steps")
        learning_rate = keras.optimizers.schedules.CosineDecay(lr, self.decay_steps) if schedule == "cosine" else lr
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="sparse_categorical_crossentropy",
                      metrics=["accuracy"], steps_per_execution=eval_every)

    @functools.cached_property
    def tester(self) -> keras.Model:
        """The model's layers and variables in an uncompiled model: predicts one batch per graph call."""
        return keras.Model(self.model.input, self.model.output, name=f"{self.model.name}_tester")

    def load(self, fresh: keras.Model) -> None:
        """Start a run from `fresh`'s variables (a model of the same architecture, built for the run)."""
        for mine, theirs in zip(self.model.variables, fresh.variables, strict=True):
            mine.assign(theirs)

    def train(self, data: Data, steps: int, batch_size: int, seed: int) -> dict:
        """Train for `steps` optimizer steps (a multiple of eval_every), validating every eval_every steps.

        Model selection on the validation split only: the model ends with the weights of the best validation
        accuracy seen, the starting weights included. Returns that accuracy and its step.
        """
        if steps % self.eval_every:
            raise ValueError(f"steps={steps} is not a multiple of eval_every={self.eval_every}")
        optimizer = self.model.optimizer
        for slot in optimizer.variables:  # a new optimizer, as a new compile would make ...
            slot.assign(np.zeros(slot.shape, slot.dtype))
        if self.schedule != "cosine":
            optimizer.learning_rate = self.lr  # ... whose constant rate is one of its variables too
        self.decay_steps.assign(float(steps))
        val = make_dataset(data.x_val, data.y_val, batch_size, in_place=True)
        start = float(self.model.evaluate(val, verbose=0, return_dict=True)["accuracy"])
        best = BestWeights(start, self.eval_every)
        with deterministic_kernels():
            self.model.fit(
                make_dataset(data.x_train, data.y_train, batch_size, shuffle_seed=seed, repeat=True, in_place=True),
                validation_data=val,
                epochs=steps // self.eval_every,
                steps_per_epoch=self.eval_every,
                callbacks=[best],
                verbose=0,
            )
        return {"val_accuracy": round(best.best_accuracy, 6), "best_step": best.best_step}


class BestWeights(keras.callbacks.Callback):
    """Remember the weights with the best validation accuracy (ties: the later one) and restore them at the end.

    The starting weights are a candidate too, with `start_accuracy`.
    """

    def __init__(self, start_accuracy: float, steps_per_round: int):
        super().__init__()
        self.steps_per_round = steps_per_round
        self.best_accuracy = start_accuracy
        self.best_step = 0
        self.best_weights = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.best_weights = self.model.get_weights()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        accuracy = float(logs["val_accuracy"])
        if accuracy >= self.best_accuracy:
            self.best_accuracy, self.best_step = accuracy, (epoch + 1) * self.steps_per_round
            self.best_weights = self.model.get_weights()

    def on_train_end(self, logs: dict | None = None) -> None:
        self.model.set_weights(self.best_weights)


def _train_point(run: str, data, batch: int, steps: int, seed: int, params: Params, source_weights: Path | None,
                 shared: dict, record: dict) -> Trainer:
    """One point's training (see run_points); fills `record` and returns the whole model's Trainer, whose model
    holds the trained point (frozen and transfer train the head through the head model, which shares its layers).

    `shared` keeps the stage's Trainers: "model" (the whole model: scratch, transfer's fine-tuning) and "head"
    (the head on the cached features: frozen, transfer's first part), made by the first point that needs them,
    and the features (_features).
    """
    cfg = params.sweep
    make_deterministic(seed, params.base.deterministic)
    arch = params.model.model_copy(update={"bn_momentum": cfg.bn_momentum})
    fresh = build_model("mnist", arch, params.base.image_size)
    if run != "scratch":
        transfer_by_name(fresh, source_weights, params.transfer.layers)
    if "model" not in shared:
        shared["model"] = Trainer(fresh, cfg.lr, cfg.schedule, cfg.eval_every)
    whole = shared["model"]
    whole.load(fresh)
    if run == "scratch":
        record["selected"] = whole.train(data, steps, batch, seed)
        return whole
    head_steps, finetune_steps = (steps, 0) if run == "frozen" else split_steps(steps, cfg)
    record["head_steps"] = head_steps
    head, features = _features(shared, whole.model, data, seed, params)  # the head's variables: loaded above
    record["selected"] = head.train(features, head_steps, batch, seed)
    if finetune_steps:
        record["selected"] = whole.train(data, finetune_steps, batch, seed)
        record["selected"]["best_step"] += head_steps
    return whole
