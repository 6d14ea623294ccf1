"""Training the label-budget sweep's points (tlpipe.lab.sweep has the subsets, the budget rule and the statistics).

Kept apart from tlpipe.lab.sweep, which aggregating the points (data_efficiency) uses without training code.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from tlpipe.core.errors import PipelineError
from tlpipe.core.live import utc_date
from tlpipe.core.model import build_model, split_at_features
from tlpipe.core.params import SWEEP_RUNS, Params
from tlpipe.core.train import Data, Recipe, Trainer, evaluate, make_deterministic, training_devices
from tlpipe.core.transfer import adapt_batchnorm, block_layers, transfer_by_name
from tlpipe.lab.sweep import budget_rule, labelled_order, per_class_count, point_name, split_budget, split_steps


def _no_retracing_notes(record: logging.LogRecord) -> bool:
    return "triggered tf.function retracing" not in record.getMessage()


UNTRANSFERRED = {"scratch", "random_frozen"}  # start from the random init alone
HEAD_ONLY = {"frozen", "adabn", "random_frozen"}  # train the head on a frozen extractor for every step
SHARE_FEATURES = {"transfer", "frozen"}  # the same frozen extractor at every budget: its features are computed once


def run_points(
    runs: list[str], budgets: list[int], seed: int, params: Params, arrays: dict, source_weights: Path | None
) -> list[dict]:
    """Train the sweep points (run, budget, `seed`) for each of `runs` and `budgets` in this process; return
    their records, budget by budget.

    Each point starts from `make_deterministic(seed)` and a freshly built model's variables, so its record is the
    one it would get alone. What the points share is kept in a SeedRuns: the frozen extractor's features and the
    compiled models with their traced functions.
    """
    # adabn's and random_frozen's extractors are new functions of each point's weights, traced once per point
    tf_logger = logging.getLogger("tensorflow")
    if _no_retracing_notes not in tf_logger.filters:
        tf_logger.addFilter(_no_retracing_notes)
    unknown = [run for run in runs if run not in SWEEP_RUNS]
    if unknown:
        raise PipelineError(f"sweep run must be one of {list(SWEEP_RUNS)}, got {unknown[0]!r}")
    if source_weights is None and set(runs) - UNTRANSFERRED:
        raise PipelineError("every sweep run but scratch and random_frozen needs the pretrained weights "
                            "(--source-weights)")
    x, y = arrays["x_train"], arrays["y_train"]
    largest = len(np.concatenate(split_budget(y, max(budgets), seed, params.sweep)))  # too large: fails here
    shared = SeedRuns(params, seed, x, y, largest, source_weights)
    records = []
    for budget in budgets:
        started = time.perf_counter()
        train, val = split_budget(y, budget, seed, params.sweep)
        data = Data(x[train], y[train], x[val], y[val])
        batch, steps = budget_rule(len(train), params.sweep)
        shared.seconds += time.perf_counter() - started
        for run in runs:
            started, shared_before = time.perf_counter(), shared.seconds + shared.feature_seconds
            record = {"run": run, "budget": budget, "seed": seed, "n_train": len(train), "n_val": len(val),
                      "batch_size": batch, "steps": steps}
            if params.sweep.per_class:
                record["labels_per_class"] = per_class_count(y, budget)
            try:
                whole = shared.train(run, data, batch, steps, record)
            except PipelineError as e:
                raise PipelineError(f"sweep point {point_name(run, budget, seed)}: {e}") from e
            record["test_accuracy"] = evaluate(whole.tester, arrays["x_test"], arrays["y_test"], 512)["test_accuracy"]
            record["devices"] = training_devices(whole.model)
            record["date"] = utc_date()
            # this point's own time: the shared work it did is counted once, below
            record["seconds"] = (time.perf_counter() - started
                                 - (shared.seconds + shared.feature_seconds - shared_before))
            records.append(record)
    users = [record for record in records if record["run"] in SHARE_FEATURES]
    for record in records:  # the shared work in equal parts: the splits among all, the features among their users
        features = shared.feature_seconds / len(users) if record["run"] in SHARE_FEATURES else 0.0
        record["seconds"] = round(record["seconds"] + shared.seconds / len(records) + features, 2)
    return records


class SeedRuns:
    """What one seed's points share, made by the first point that needs it:
    - `whole`: the whole model's Trainer (scratch, transfer's fine-tuning);
    - `head`: the head's Trainer, on the frozen extractor's cached features (frozen, transfer's first part);
    - the features of the seed's labelled order up to the largest budget: every budget's split is a prefix of
      that order (split_budget), and every transferred model has the same frozen extractor, so a budget's
      features are slices of them;
    - `seconds` and `feature_seconds`: the time of that shared work, split at the end among the points and
      among the points that used the features.

    Every dataset gathers from the arrays in place: make_dataset's TensorFlow copy would copy a budget's
    features again for each run.
    """

    def __init__(self, params: Params, seed: int, images: np.ndarray, labels: np.ndarray, largest: int,
                 source_weights: Path | None):
        self.params, self.seed, self.source_weights = params, seed, source_weights
        self.images, self.labels, self.largest = images, labels, largest
        self.classes = int(labels.max()) + 1  # every class is in the labelled pool (tlpipe.core.target)
        cfg = params.sweep
        self.recipes = {"whole": Recipe(cfg.lr, cfg.schedule, lr_key="sweep.lr"),
                        "head": Recipe(cfg.head_lr, cfg.schedule, lr_key="sweep.head_lr")}
        self.whole: Trainer | None = None
        self.head: Trainer | None = None
        self.features: Data | None = None
        self.seconds = self.feature_seconds = 0.0

    def fresh_model(self, run: str) -> keras.Model:
        """The run's starting point, seeded: a new model (the same random init for every run of the seed), with
        the transferred layers: all of transfer.layers, those of the first k conv blocks for depth<k>, none for
        scratch and random_frozen."""
        make_deterministic(self.seed, self.params.base.deterministic)
        arch = self.params.model.model_copy(update={"bn_momentum": self.params.sweep.bn_momentum})
        model = build_model("target", arch, self.params.base.image_size, self.classes)
        names = self.params.transfer.layers
        if run.startswith("depth"):
            names = block_layers(names, int(run.removeprefix("depth")))
        if run not in UNTRANSFERRED:
            transfer_by_name(model, self.source_weights, names)
        return model

    def trainer(self, name: str, model: keras.Model) -> Trainer:
        return Trainer(model, self.recipes[name], self.params.sweep.eval_every, in_place=True)

    def train(self, run: str, data: Data, batch: int, steps: int, record: dict) -> Trainer:
        """One point's training; fills `record` and returns the whole model's Trainer, whose model holds the
        trained point (frozen and transfer train the head through the head model, which shares its layers)."""
        fresh = self.fresh_model(run)
        if self.whole is None:
            self.whole = self.trainer("whole", fresh)
        if run == "scratch" or run.startswith("depth"):  # every layer trains from the first step
            record["selected"] = self.whole.fit_steps(data, steps, batch, self.seed, fresh)
            return self.whole
        head_steps, finetune_steps = (steps, 0) if run in HEAD_ONLY else split_steps(steps, self.params.sweep)
        record["head_steps"] = head_steps
        self.whole.load(fresh)  # the head's layers are the whole model's
        if run in HEAD_ONLY - {"frozen"}:
            # the extractor's BatchNormalization statistics from this budget's training images (AdaBN)
            adapt_batchnorm(self.whole.model, data.x_train, self.params.sweep.batch_size)
            head, features = self._budget_features(data)
        else:
            head, features = self._head_features(data)
        record["selected"] = head.fit_steps(features, head_steps, batch, self.seed)
        if finetune_steps:
            head_curve = record["selected"]["curve"]
            record["selected"] = self.whole.fit_steps(data, finetune_steps, batch, self.seed, first_step=head_steps)
            record["selected"]["best_step"] += head_steps
            if head_curve:  # fine-tuning goes on from the head's selected weights, its curve's first point
                record["selected"]["curve"] = head_curve[:-1] + record["selected"]["curve"]
        return self.whole

    def _budget_features(self, data: Data) -> tuple[Trainer, Data]:
        """The head's Trainer and `data`'s features from the model's extractor as it is now (adabn and
        random_frozen: their extractors differ per point, so nothing is shared but the head's Trainer)."""
        head, features = self._features(data)
        if self.head is None:
            self.head = self.trainer("head", head)
        return self.head, features

    def _features(self, data: Data) -> tuple[keras.Model, Data]:
        return head_features(self.whole.model, data, self.params.transfer.freeze, self.params.sweep.batch_size)

    def _head_features(self, data: Data) -> tuple[Trainer, Data]:
        """The head's Trainer and `data`'s features (the first `len(data.x_val)` images of the seed's order are
        the budget's validation split, the rest up to the budget its training set: split_budget)."""
        if self.features is None:
            started = time.perf_counter()
            order = labelled_order(self.labels, self.seed)[: self.largest]
            ordered = Data(self.images[order], self.labels[order], data.x_val[:0], data.y_val[:0])
            head, self.features = self._features(ordered)
            if self.head is None:
                self.head = self.trainer("head", head)
            self.feature_seconds += time.perf_counter() - started
        n_val, n = len(data.x_val), len(data.x_val) + len(data.x_train)
        features = self.features
        return self.head, Data(features.x_train[n_val:n], data.y_train, features.x_train[:n_val], data.y_val)


def head_features(model: keras.Model, data: Data, freeze: list[str], batch_size: int) -> tuple[keras.Model, Data]:
    """(head, `data` with its images replaced by the extractor's outputs). A frozen extractor, BatchNormalization in
    inference mode, is a fixed function of the image: a head-only run computes it once per image instead of at every
    step. The head shares `model`'s layers, so training it trains `model`."""
    extractor, head = split_at_features(model)
    missing = sorted(layer.name for layer in extractor.layers if layer.weights and layer.name not in set(freeze))
    if missing:
        raise PipelineError(f"params.yaml: the sweep's head-only runs need the whole extractor frozen, but {missing} "
                            "are not in transfer.freeze; add them to transfer.layers and transfer.freeze")
    run = tf.function(lambda x: extractor(x, training=False), reduce_retracing=True)

    def features(x: np.ndarray) -> np.ndarray:
        out = np.empty((len(x), *head.input.shape[1:]), np.float32)  # filled in place: no 2x peak
        images = x.reshape(len(x), *extractor.input.shape[1:])
        for i in range(0, len(x), batch_size):
            out[i : i + batch_size] = run(images[i : i + batch_size].astype(np.float32)).numpy()
        return out

    return head, Data(features(data.x_train), data.y_train, features(data.x_val), data.y_val)
