"""Training the label-budget sweep's points (tlpipe.sweep has the subsets, the budget rule and the statistics).

Kept apart from tlpipe.sweep so that aggregating the points (data_efficiency) does not depend on training code.
"""

from __future__ import annotations

import time
from pathlib import Path

from tlpipe.errors import PipelineError
from tlpipe.model import build_model, split_at_features
from tlpipe.params import SWEEP_RUNS, Params
from tlpipe.sweep import budget_rule, split_budget, split_steps
from tlpipe.train import Data, cache_features, evaluate, make_deterministic, train_steps, training_devices
from tlpipe.transfer import set_trainable, transfer_by_name


def run_points(
    runs: list[str], budget: int, seed: int, params: Params, arrays: dict, source_weights: Path | None
) -> list[dict]:
    """Train the sweep points (run, `budget`, `seed`) for each of `runs` in this process; return their records.

    Each point starts from `make_deterministic(seed)` and a fresh model, so its record is the one it would get
    alone. What the points share is computed once: the budget's split and, for transfer and frozen, the frozen
    extractor's features (the same transferred weights, so the same features).
    """
    unknown = [run for run in runs if run not in SWEEP_RUNS]
    if unknown:
        raise PipelineError(f"sweep run must be one of {list(SWEEP_RUNS)}, got {unknown[0]!r}")
    if source_weights is None and any(run != "scratch" for run in runs):
        raise PipelineError("the transfer and frozen sweep runs need the Fashion weights (--source-weights)")
    cfg = params.sweep
    split_started = time.perf_counter()
    train, val = split_budget(arrays["y_train"], budget, seed, cfg)
    x, y = arrays["x_train"], arrays["y_train"]
    data = Data(x[train], y[train], x[val], y[val])
    batch, steps = budget_rule(len(train), cfg)
    shared = {"seconds": time.perf_counter() - split_started}  # split (and features), split among the points
    records = []
    for i, run in enumerate(runs):
        started, shared_before = time.perf_counter(), shared["seconds"]
        record = {"run": run, "budget": budget, "seed": seed, "n_train": len(train), "n_val": len(val),
                  "batch_size": batch, "steps": steps}
        model = _train_point(run, data, batch, steps, seed, params, source_weights, shared, record)
        record["test_accuracy"] = evaluate(model, arrays["x_test"], arrays["y_test"], 512)["test_accuracy"]
        record["devices"] = training_devices(model)
        # this point's own time: the shared work it did (the features) is counted once, below, for all
        record["seconds"] = time.perf_counter() - started - (shared["seconds"] - shared_before)
        records.append(record)
        if "features" in shared and all(later == "scratch" for later in runs[i + 1:]):
            del shared["features"]  # no later point needs them: free the memory (GBs at 60,000 labels)
    for record in records:  # the shared work, in equal parts
        record["seconds"] = round(record["seconds"] + shared["seconds"] / len(records), 2)
    return records


def _train_point(run: str, data, batch: int, steps: int, seed: int, params: Params, source_weights: Path | None,
                 shared: dict, record: dict):
    """One point's training (see run_points); fills `record` and returns the trained model."""
    cfg = params.sweep
    make_deterministic(seed, params.base.deterministic)
    arch = params.model.model_copy(update={"bn_momentum": cfg.bn_momentum})
    model = build_model("mnist", arch, params.base.image_size)
    if run == "scratch":
        record["selected"] = train_steps(model, data, steps, cfg.lr, cfg.schedule, batch, seed, cfg.eval_every)
        return model
    transfer_by_name(model, source_weights, params.transfer.layers)
    set_trainable(model, params.transfer.freeze, False, "transfer.freeze")
    head_steps, finetune_steps = (steps, 0) if run == "frozen" else split_steps(steps, cfg)
    record["head_steps"] = head_steps
    if "features" in shared:
        head = split_at_features(model)[1]
    else:
        started = time.perf_counter()
        head, shared["features"] = cache_features(model, data, batch, "the sweep's frozen phase")
        shared["seconds"] += time.perf_counter() - started
    record["selected"] = train_steps(
        head, shared["features"], head_steps, cfg.head_lr, cfg.schedule, batch, seed, cfg.eval_every
    )
    if finetune_steps:
        set_trainable(model, params.transfer.freeze, True, "transfer.freeze")
        record["selected"] = train_steps(model, data, finetune_steps, cfg.lr, cfg.schedule, batch, seed, cfg.eval_every)
        record["selected"]["best_step"] += head_steps
    return model
