"""The label-budget sweep's pieces on known values: subsets, splits, the budget rule and the statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.support import run_main, run_stage
from tlpipe.core.errors import PipelineError
from tlpipe.core.params import load_params
from tlpipe.lab.sweep import (
    aggregate,
    budget_rule,
    labelled_order,
    plot_rows,
    split_budget,
    split_steps,
    summarize,
)


@pytest.fixture
def cfg(params_file):
    return load_params(params_file).sweep


def imbalanced_labels() -> np.ndarray:
    """825 labels, class k has 60 + 5k images (like MNIST, not balanced), in random order."""
    labels = np.concatenate([np.full(60 + 5 * k, k) for k in range(10)])
    return np.random.default_rng(3).permutation(labels)


@pytest.mark.parametrize("budget", [10, 30, 100, 250, 600])
def test_every_budget_is_class_balanced(budget):
    labels = imbalanced_labels()
    counts = np.bincount(labels[labelled_order(labels, seed=7)[:budget]], minlength=10)
    assert counts.max() - counts.min() <= 1 and counts.sum() == budget


def test_budgets_are_nested_and_seeds_differ():
    labels = imbalanced_labels()
    order = labelled_order(labels, seed=7)
    assert sorted(order) == list(range(len(labels)))  # a permutation: no image twice
    for small, large in ((100, 300), (300, 1000)):
        assert set(order[:small]) <= set(order[:large])
    assert not np.array_equal(order[:100], labelled_order(labels, seed=8)[:100])
    np.testing.assert_array_equal(order, labelled_order(labels, seed=7))  # same seed, same subsets


def test_past_the_smallest_class_the_rest_stay_balanced():
    labels = imbalanced_labels()  # class 0 has 60 images
    counts = np.bincount(labels[labelled_order(labels, seed=1)[:640]], minlength=10)
    assert counts[0] == 60 and counts[1:].max() - counts[1:].min() <= 1


def test_validation_split_is_inside_the_budget_and_balanced(cfg):
    labels = imbalanced_labels()
    train, val = split_budget(labels, 60, seed=0, cfg=cfg)
    assert len(val) == 10 and len(train) == 50  # val_fraction 0.1 of 60 is 6, raised to one per class
    assert not set(train) & set(val)
    assert set(train) | set(val) == set(labelled_order(labels, 0)[:60])
    assert sorted(labels[val]) == list(range(10))
    with pytest.raises(PipelineError, match="sweep.budgets has 5000, more than the 825 training images"):
        split_budget(labels, 5000, seed=0, cfg=cfg)


def test_per_class_budgets_count_labels_per_class_capped_by_the_smallest_class(cfg):
    cfg = cfg.model_copy(update={"per_class": True})
    labels = np.random.default_rng(0).permutation(np.repeat(np.arange(3), [4, 9, 12]))  # 3 classes, smallest 4
    train, val = split_budget(labels, 3, seed=1, cfg=cfg)
    assert np.bincount(labels[train]).tolist() == [2, 2, 2] and np.bincount(labels[val]).tolist() == [1, 1, 1]
    train, val = split_budget(labels, 30, seed=1, cfg=cfg)  # capped at the 4 images of class 0
    assert np.bincount(labels[train]).tolist() == [3, 3, 3] and np.bincount(labels[val]).tolist() == [1, 1, 1]
    train, val = split_budget(labels, 1, seed=1, cfg=cfg)  # one label per class: none left to validate on
    assert np.bincount(labels[train]).tolist() == [1, 1, 1] and len(val) == 0
    assert set(split_budget(labels, 1, 1, cfg)[0]) <= set(np.concatenate(split_budget(labels, 3, 1, cfg)))
    many = np.arange(300) % 15  # 15 classes: a budget of 20 images in all leaves no room for them
    with pytest.raises(PipelineError, match="sweep.budgets has 20, fewer than 2 labels for each of the 15 classes"):
        split_budget(many, 20, seed=0, cfg=cfg.model_copy(update={"per_class": False}))


def test_a_run_without_validation_images_keeps_its_last_weights(params_file):
    import keras

    from tlpipe.core.data import Data
    from tlpipe.core.model import build_model
    from tlpipe.core.train import Recipe, Trainer

    params = load_params(params_file)
    keras.utils.set_random_seed(0)
    model = build_model("target", params.model, params.base.image_size, 3)
    x = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    y = np.arange(3, dtype=np.int32)
    trainer = Trainer(model, Recipe(0.01, "constant"), 2)
    before = model.get_layer("target_out").get_weights()[0].copy()
    selected = trainer.fit_steps(Data(x, y, x[:0], y[:0]), 4, 3, seed=0)
    assert selected == {"val_accuracy": None, "best_step": 4, "curve": None}
    assert int(model.optimizer.iterations.numpy()) == 4
    assert not np.allclose(before, model.get_layer("target_out").get_weights()[0])


def test_budget_rule_fixed_steps_with_an_epoch_floor(cfg):
    # tiny params: batch 8, steps 4, eval_every 2, min_epochs 1
    assert budget_rule(5, cfg) == (5, 4)  # batch shrinks to the set; fixed steps
    assert budget_rule(24, cfg) == (8, 4)  # 3 steps make an epoch: the fixed 4 win
    assert budget_rule(50, cfg) == (8, 8)  # ceil(50 / 8) = 7 steps for one epoch, rounded up to eval_every
    assert split_steps(8, cfg) == (4, 4)
    with pytest.raises(PipelineError, match="head_fraction"):
        split_steps(2, cfg)


def test_intervals_use_the_t_quantiles_of_the_tables():
    for df, expected in ((1, 12.706), (2, 4.303), (4, 2.776), (10, 2.228), (1000, 1.962)):
        s = summarize([float(i) for i in range(df + 1)])
        half = (s["ci95_high"] - s["ci95_low"]) / 2
        assert half * np.sqrt(df + 1) / s["std"] == pytest.approx(expected, abs=1e-3)


def test_summary_of_known_values():
    s = summarize([0.90, 0.92, 0.94])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.92) and s["std"] == pytest.approx(0.02)
    half = 4.302653 * 0.02 / np.sqrt(3)  # t(0.975, 2) * s / sqrt(n)
    assert s["ci95_low"] == pytest.approx(0.92 - half, abs=1e-6)
    assert s["ci95_high"] == pytest.approx(0.92 + half, abs=1e-6)
    single = summarize([0.5])
    assert single["std"] is None and single["ci95_low"] is None  # one value has no spread and no interval


def test_aggregate_pairs_runs_by_seed(cfg):
    values = {("transfer", 20): [0.8, 0.9], ("frozen", 20): [0.7, 0.7], ("scratch", 20): [0.5, 0.7],
              ("transfer", 60): [0.95, 0.97], ("frozen", 60): [0.9, 0.9], ("scratch", 60): [0.9, 0.96]}
    records = [
        {"run": run, "budget": budget, "seed": seed, "test_accuracy": acc, "seconds": 1.0, "selected": {"curve": None}}
        for (run, budget), accs in values.items()
        for seed, acc in zip(cfg.seeds, accs, strict=True)
    ]
    out = aggregate(records, cfg)
    assert out["transfer"]["20"]["mean"] == pytest.approx(0.85)
    assert out["transfer"]["20"]["per_seed"] == {"0": 0.8, "1": 0.9}
    gain = out["transfer_minus_scratch"]["20"]  # paired: 0.3 and 0.2
    assert gain["mean"] == pytest.approx(0.25) and gain["std"] == pytest.approx(np.std([0.3, 0.2], ddof=1), abs=1e-6)
    assert out["train_seconds_total"] == 12.0
    rows = plot_rows(out)
    assert len(rows) == 6 and rows[0] == {"labels": 20, "run": "transfer", "mean": 0.85,
                                          "ci95_low": out["transfer"]["20"]["ci95_low"],
                                          "ci95_high": out["transfer"]["20"]["ci95_high"]}


def test_data_efficiency_names_a_missing_point(tmp_path, params_file):
    points = tmp_path / "points"
    points.mkdir()
    result = run_main(tmp_path, "data_efficiency", "--points", "points", "--runs", "transfer", "scratch",
                       "--pretrain-log", "log", "--metrics-out", "out.json", "--plots-out", "plots")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: data_efficiency: points/seed-0/transfer-20-0.json: sweep point is missing; "
        "run `dvc repro` (the study's: `make study`) to compute it"
    ]
    assert not (tmp_path / "out.json").exists() and not (tmp_path / "plots").exists()


def test_point_record(tmp_path, params_file, data_dir):
    result = run_main(tmp_path, "sweep_point", "--runs", "scratch", "--budgets", "60", "--seed", "1",
                       "--data", str(data_dir / "target.npz"), "--out-dir", "points")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "points").iterdir()) == ["scratch-60-1.json"]
    record = json.loads((tmp_path / "points" / "scratch-60-1.json").read_text())
    assert (record["n_train"], record["n_val"], record["batch_size"], record["steps"]) == (50, 10, 8, 8)
    assert 0 <= record["test_accuracy"] <= 1 and record["selected"]["best_step"] in (0, 2, 4, 6, 8)
    result = run_main(tmp_path, "sweep_point", "--runs", "transfer", "--budgets", "60", "--seed", "1",
                       "--data", str(data_dir / "target.npz"), "--out-dir", "other")
    assert result.returncode == 2 and "needs --source-weights" in result.stderr
    assert not (tmp_path / "other").exists()


def test_points_in_one_process_match_points_alone(tmp_path, params_file, data_dir):
    """Sharing a process, the features and the compiled models changes no record (seconds aside)."""
    import keras

    from tlpipe.core.model import build_model
    from tlpipe.core.params import load_params
    from tlpipe.core.transfer import save_weights

    params = load_params(params_file)
    keras.utils.set_random_seed(7)
    save_weights(build_model("source", params.model, params.base.image_size), tmp_path / "source.named.h5")
    common = ["--seed", "1", "--data", str(data_dir / "target.npz"), "--source-weights", "source.named.h5"]
    runs = ["transfer", "frozen", "scratch", "adabn", "random_frozen", "depth2"]  # each way a point starts
    together = run_main(tmp_path, "sweep_point", "--runs", *runs, "--budgets", "20", "60", *common,
                        "--out-dir", "together")
    assert together.returncode == 0, together.stderr
    assert len(list((tmp_path / "together").glob("*.json"))) == 2 * len(runs)
    for run in runs:  # each alone, at the budget after the first one's shared work; the first in a new process
        alone = (run_stage if run == runs[0] else run_main)(tmp_path, "sweep_point", "--runs", run, "--budgets", "60",
                                                            *common, "--out-dir", "alone")
        assert alone.returncode == 0, alone.stderr
        a, b = (json.loads((tmp_path / d / f"{run}-60-1.json").read_text()) for d in ("together", "alone"))
        for record in (a, b):  # wall time and the day are all that may differ
            record.pop("seconds"), record.pop("date")
        assert a == b, run


def test_trainer_gives_each_run_a_new_optimizer_and_schedule(params_file):
    """One compiled model serves runs of different lengths: Adam restarts at step 0 and the cosine spans each run."""
    from tests.support import synthetic_arrays
    from tlpipe.core.model import build_model
    from tlpipe.core.train import Data, Recipe, Trainer, make_deterministic

    params = load_params(params_file)
    arrays = synthetic_arrays(48, 1, seed=0)
    data = Data(arrays["x_train"][:32], arrays["y_train"][:32], arrays["x_train"][32:], arrays["y_train"][32:])
    make_deterministic(0)
    trainer = Trainer(build_model("target", params.model, params.base.image_size), Recipe(0.01, "cosine"), 2)
    optimizer = trainer.model.optimizer
    for steps in (4, 8):
        trainer.fit_steps(data, steps, 16, seed=0)
        assert int(optimizer.iterations) == steps  # from 0 again, not on from the last run
        optimizer.iterations.assign(steps // 2)
        assert float(optimizer.learning_rate) == pytest.approx(0.005)  # half way down this run's cosine
    constant = Trainer(build_model("target", params.model, params.base.image_size), Recipe(0.01, "constant"), 2)
    for steps in (4, 8):
        constant.fit_steps(data, steps, 16, seed=0)
        assert int(constant.model.optimizer.iterations) == steps
        assert float(constant.model.optimizer.learning_rate) == pytest.approx(0.01)  # not zeroed with the slots


def test_trainer_keeps_its_arrays_in_numpy_and_tests_one_batch_per_call(params_file, monkeypatch):
    """The memory rules of a seed stage (Trainer): no run copies its arrays into TensorFlow, and the test pass
    runs on `tester`, the trained layers themselves, one batch per graph call (not steps_per_execution)."""
    import tensorflow as tf

    import tlpipe.lab.points as points
    from tests.support import synthetic_arrays
    from tlpipe.core.model import build_model
    from tlpipe.core.train import Data, Recipe, Trainer, make_dataset, make_deterministic

    params = load_params(params_file)
    arrays = synthetic_arrays(48, 40, seed=0)
    data = Data(arrays["x_train"][:32], arrays["y_train"][:32], arrays["x_train"][32:], arrays["y_train"][32:])
    make_deterministic(0)
    model = build_model("target", params.model, params.base.image_size)
    trainer = Trainer(model, Recipe(0.01, "cosine"), steps_per_execution=2, in_place=True)
    copied, constant, run_arrays = [], tf.constant, (data.x_train, data.y_train, data.x_val, data.y_val)

    def spy(value, *args, **kwargs):  # did this tf.constant copy (part of) one of the run's arrays?
        copied.append(isinstance(value, np.ndarray) and any(np.shares_memory(value, a) for a in run_arrays))
        return constant(value, *args, **kwargs)

    monkeypatch.setattr(tf, "constant", spy)
    make_dataset(data.x_train, data.y_train, 16)  # the spy sees a copy: make_dataset's default for small arrays
    assert any(copied)
    copied.clear()
    trainer.fit_steps(data, 4, 16, seed=0)
    assert not any(copied)
    monkeypatch.undo()

    assert trainer.model.steps_per_execution == 2 and trainer.tester.steps_per_execution == 1
    assert [id(v) for v in trainer.tester.variables] == [id(v) for v in trainer.model.variables]
    np.testing.assert_allclose(trainer.tester.predict(arrays["x_test"], batch_size=8, verbose=0),
                               trainer.model.predict(arrays["x_test"], batch_size=8, verbose=0), rtol=1e-6)

    tested = []  # run_points tests every point with its Trainer's tester
    evaluate = points.evaluate

    def evaluate_spy(model, *args):
        tested.append(model.steps_per_execution)
        return evaluate(model, *args)

    monkeypatch.setattr(points, "evaluate", evaluate_spy)
    records = points.run_points(["scratch"], [20], 0, params, arrays, None)
    assert len(records) == 1 and tested == [1]

def test_one_seed_gives_means_without_intervals(tmp_path, params_file, monkeypatch):
    """`sweep.seeds: [0]` is valid: means only, no std or interval, said in the JSON, the CSV and the PNG."""
    import matplotlib.axes

    from tests.support import set_param
    from tlpipe.report.figures import plot_png

    def records(seeds: list[int]) -> list[dict]:
        accuracy = {"transfer": 0.9, "frozen": 0.8, "scratch": 0.7}
        return [{"run": run, "budget": budget, "seed": seed, "test_accuracy": acc + 0.01 * seed, "seconds": 1.0}
                for run, acc in accuracy.items() for budget in (20, 60) for seed in seeds]

    assert aggregate(records([0, 1]), load_params(params_file).sweep)["intervals"] is True
    set_param(params_file, "sweep.seeds", [0])
    cfg = load_params(params_file).sweep  # one seed passes validation
    out = aggregate(records([0]), cfg)
    assert out["intervals"] is False and "one seed" in out["note"]
    assert out["transfer"]["20"] == {"n": 1, "mean": 0.9, "std": None, "ci95_low": None, "ci95_high": None,
                                     "per_seed": {"0": 0.9}}
    gain = out["transfer_minus_scratch"]["60"]
    assert gain["mean"] == pytest.approx(0.2) and gain["std"] is None and gain["ci95_high"] is None
    rows = plot_rows(out)
    assert len(rows) == 6 and all(r["ci95_low"] is None and r["ci95_high"] is None for r in rows)
    titles, errorbars = [], []
    monkeypatch.setattr(matplotlib.axes.Axes, "set_title", lambda self, title, *a, **k: titles.append(title))
    monkeypatch.setattr(matplotlib.axes.Axes, "errorbar", lambda self, *a, **k: errorbars.append(a))
    png = tmp_path / "plots" / "accuracy.png"
    plot_png(png, out)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert errorbars == [] and titles == ["Data efficiency: one seed, means only (no intervals)"]
    # the stage itself: JSON with nulls, CSV with empty interval cells
    (tmp_path / "points" / "seed-0").mkdir(parents=True)
    for record in records([0]):
        (tmp_path / "points" / "seed-0" / f"{record['run']}-{record['budget']}-0.json").write_text(json.dumps(record))
    (tmp_path / "log").mkdir()
    (tmp_path / "log" / "metrics.json").write_text(json.dumps({"train_seconds": 5.0}))
    result = run_main(tmp_path, "data_efficiency", "--points", "points", "--runs", "transfer", "frozen", "scratch",
                       "--pretrain-log", "log", "--metrics-out", "out.json", "--plots-out", "stage_plots")
    assert result.returncode == 0, result.stderr
    # with where and when from the records (these synthetic ones name neither), and the pretraining's time
    assert json.loads((tmp_path / "out.json").read_text()) == out | {"machine": None, "date": None,
                                                                     "pretrain_seconds": 5.0}
    csv_lines = (tmp_path / "stage_plots" / "accuracy.csv").read_text().splitlines()
    assert csv_lines[:2] == ["labels,run,mean,ci95_low,ci95_high", "20,transfer,0.9,,"]
