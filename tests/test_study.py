"""The study's pieces: the controls' starting points, AdaBN, the verdicts, steps to converge, McNemar's test."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tlpipe.core.errors import PipelineError
from tlpipe.core.model import build_model
from tlpipe.core.params import load_params
from tlpipe.core.transfer import adapt_batchnorm, block_layers, read_weights, save_weights
from tlpipe.lab.sweep import aggregate, convergence, first_reaching, verdict
from tlpipe.report.compare import mcnemar
from tlpipe.report.figures import gain_rows, plot_gain

EXTRACTOR = ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3"]


@pytest.fixture
def params(params_file):
    return load_params(params_file)


def interval(low, high):
    return {"ci95_low": low, "ci95_high": high}


@pytest.mark.parametrize(("low", "high", "expected"), [
    (-0.004, 0.003, "equivalent"),
    (0.001, 0.004, "equivalent"),  # excludes 0, but the whole difference is smaller than the margin
    (0.001, 0.02, "higher"),
    (-0.03, -0.006, "lower"),
    (-0.01, 0.002, "inconclusive"),
    (-0.004, 0.006, "inconclusive"),
    (None, None, None),  # one seed: no interval, no verdict
])
def test_verdict_says_where_the_interval_lies(low, high, expected):
    assert verdict(interval(low, high), 0.005) == expected


def test_first_reaching_is_the_first_step_at_the_threshold():
    curve = [[0, 0.1], [2, 0.8], [4, 0.9], [6, 0.85]]
    assert first_reaching(curve, 0.85) == 4
    assert first_reaching(curve, 0.95) is None
    assert first_reaching(None, 0.5) is None


def test_steps_to_converge_are_paired_with_scratch(cfg_two_seeds):
    cfg = cfg_two_seeds
    curves = {
        # scratch's best is 1.0 at both seeds: the threshold is cfg.converge (0.98) of it
        ("scratch", 20, 0): [[0, 0.1], [2, 0.5], [4, 1.0]],
        ("scratch", 20, 1): [[0, 0.1], [2, 0.99], [4, 1.0]],
        ("transfer", 20, 0): [[0, 0.5], [2, 0.98], [4, 1.0]],
        ("transfer", 20, 1): [[0, 0.5], [2, 0.9], [4, 0.9]],  # never gets there
    }
    out = convergence(curves, ["transfer", "scratch"], cfg)
    assert list(out["scratch"]) == ["20"]  # budget 60 has no curves
    assert out["scratch"]["20"]["reached"] == 2 and out["scratch"]["20"]["steps"]["mean"] == 3
    transfer = out["transfer"]["20"]
    assert transfer["reached"] == 1 and transfer["steps"]["mean"] == 2
    assert transfer["minus_scratch"] is None  # not paired over the one seed that gets there: it is the fast one
    curves[("transfer", 20, 1)] = [[0, 0.5], [2, 0.9], [4, 0.99]]
    paired = convergence(curves, ["transfer", "scratch"], cfg)["transfer"]["20"]["minus_scratch"]
    assert paired["n"] == 2 and paired["mean"] == 0  # seed 0: 2 - 4, seed 1: 4 - 2


@pytest.fixture
def cfg_two_seeds(params_file):
    cfg = load_params(params_file).sweep
    assert cfg.seeds == [0, 1] and cfg.budgets == [20, 60] and cfg.converge == 0.98
    return cfg


def test_every_run_is_paired_with_scratch_and_gets_a_verdict(cfg_two_seeds, tmp_path):
    accuracy = {"transfer": (0.90, 0.91), "adabn": (0.80, 0.80), "scratch": (0.90, 0.90), "depth3": (0.95, 0.96)}
    records = [{"run": run, "budget": budget, "seed": seed, "test_accuracy": accs[seed], "seconds": 2.0}
               for run, accs in accuracy.items() for budget in (20, 60) for seed in (0, 1)]
    out = aggregate(records, cfg_two_seeds)
    assert out["runs"] == ["transfer", "scratch", "adabn", "depth3"]  # in SWEEP_RUNS order
    assert {k for k in out if k.endswith("_minus_scratch")} == {"transfer_minus_scratch", "adabn_minus_scratch",
                                                                "depth3_minus_scratch"}
    assert out["transfer_minus_depth3"]["20"]["mean"] == pytest.approx(-0.05)
    assert out["adabn_minus_scratch"]["20"]["verdict"] == "lower"
    assert out["transfer_minus_scratch"]["20"]["verdict"] == "inconclusive"  # +0.005 +- a wide t interval
    rows = gain_rows(out)
    assert {r["run"] for r in rows} == {"transfer", "adabn", "depth3"}
    assert all(r["band_low"] == -0.005 and r["band_high"] == 0.005 for r in rows)
    png = tmp_path / "gain.png"
    plot_gain(png, out, "title")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_mcnemar_counts_only_disagreements_and_gives_the_exact_p():
    actual = np.zeros(100, int)
    a, b = actual.copy(), actual.copy()
    a[:1] = 1  # a wrong on 1 image that b gets right ...
    b[50:59] = 1  # ... b wrong on 9 that a gets right
    a[90:], b[90:] = 1, 2  # both wrong: no evidence either way
    test = mcnemar(actual, a, b)
    assert (test["a_only_correct"], test["b_only_correct"]) == (9, 1)
    assert test["p_value"] == pytest.approx(2 * (1 + 10) / 2**10, rel=1e-3)  # two-sided binomial, n=10, k<=1
    assert mcnemar(actual, b, a)["p_value"] == test["p_value"]
    assert mcnemar(actual, a, a)["p_value"] == 1.0
    # 150 against 50: far from a fair coin, p about 1e-12 (an exact tail, not a normal approximation)
    big = mcnemar(np.zeros(200, int), np.r_[np.zeros(150, int), np.ones(50, int)], np.r_[np.ones(150, int),
                                                                                          np.zeros(50, int)])
    assert (big["a_only_correct"], big["b_only_correct"]) == (150, 50) and 0 < big["p_value"] < 1e-9


def test_depth_runs_transfer_the_first_blocks_only():
    assert block_layers(EXTRACTOR, 1) == ["conv1", "bn1"]
    assert block_layers(EXTRACTOR, 2) == ["conv1", "bn1", "conv2", "bn2"]
    assert block_layers(EXTRACTOR, 3) == EXTRACTOR
    with pytest.raises(PipelineError, match="transfer.layers has no conv3"):
        block_layers(["conv1", "bn1", "conv2", "bn2"], 3)


def test_adabn_sets_each_layers_statistics_from_its_inputs_in_order(params):
    keras.utils.set_random_seed(0)
    model = build_model("target", params.model, params.base.image_size)
    kernels = [w.numpy().copy() for w in model.trainable_weights]
    # 3 images in batches of 2: bn3 averages 3 x 7 x 7 = 147 values, where the unbiased variance would be 0.7 % off
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    assert adapt_batchnorm(model, images, batch_size=2) == ["bn1", "bn2", "bn3"]
    x = images[..., None].astype(np.float32)
    for name in ("bn1", "bn2", "bn3"):  # each layer's input, with the layers before it already adapted
        inputs = keras.Model(model.input, model.get_layer(name).input)(x, training=False).numpy()
        flat = inputs.reshape(-1, inputs.shape[-1]).astype(np.float64)
        np.testing.assert_allclose(model.get_layer(name).moving_mean.numpy(), flat.mean(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(model.get_layer(name).moving_variance.numpy(), flat.var(0), rtol=1e-4)
    for before, after in zip(kernels, model.trainable_weights, strict=True):  # no weight changes
        np.testing.assert_array_equal(before, after.numpy())


def source_file(params, path):
    """Pretrained weights whose BatchNormalization layers are unlike a new model's, so that a copy shows."""
    keras.utils.set_random_seed(3)
    trained = build_model("source", params.model, params.base.image_size)
    rng = np.random.default_rng(0)
    for name in ("bn1", "bn2", "bn3"):
        layer = trained.get_layer(name)
        layer.set_weights([rng.uniform(0.5, 1.5, w.shape).astype(np.float32) for w in layer.get_weights()])
    save_weights(trained, path)
    return path


def test_controls_start_from_what_their_names_say(params, tmp_path):
    from tlpipe.lab.points import SeedRuns

    source = source_file(params, tmp_path / "source.named.h5")
    stored = read_weights(source)
    labels = np.repeat(np.arange(10), 4)
    runs = SeedRuns(params, 0, np.zeros((40, 28, 28), np.uint8), labels, 40, source)

    def same(model, layer):
        return all(np.array_equal(a, b) for a, b in zip(model.get_layer(layer).get_weights(), stored[layer],
                                                         strict=True))

    scratch, random_frozen = runs.fresh_model("scratch"), runs.fresh_model("random_frozen")
    assert not any(same(random_frozen, layer) for layer in EXTRACTOR)
    for a, b in zip(scratch.get_weights(), random_frozen.get_weights(), strict=True):  # the seed's one random init
        np.testing.assert_array_equal(a, b)
    depth2 = runs.fresh_model("depth2")
    assert [layer for layer in EXTRACTOR if same(depth2, layer)] == ["conv1", "bn1", "conv2", "bn2"]
    assert all(same(runs.fresh_model(run), layer) for run in ("adabn", "depth3") for layer in EXTRACTOR)


def test_adabn_and_random_frozen_train_the_head_alone_on_the_budgets_statistics(params, tmp_path):
    from tlpipe.core.data import Data
    from tlpipe.lab.points import SeedRuns
    from tlpipe.lab.sweep import budget_rule, split_budget

    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 256, (60, 28, 28), dtype=np.uint8), np.repeat(np.arange(10), 6)
    runs = SeedRuns(params, 0, x, y, 60, source_file(params, tmp_path / "source.named.h5"))
    train, val = split_budget(y, 60, 0, params.sweep)
    data = Data(x[train], y[train], x[val], y[val])
    batch, steps = budget_rule(len(train), params.sweep)
    for run in ("adabn", "random_frozen"):
        record = {}
        trained = runs.train(run, data, batch, steps, record).model
        assert record["head_steps"] == steps
        expected = runs.fresh_model(run)  # the run's start, adapted here with another batch size
        adapt_batchnorm(expected, data.x_train, 7)
        for layer in EXTRACTOR:  # the extractor: the start's weights, the budget's training images' statistics
            for a, b in zip(trained.get_layer(layer).get_weights(), expected.get_layer(layer).get_weights(),
                            strict=True):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=f"{run}: {layer}")
        assert not np.array_equal(trained.get_layer("target_out").get_weights()[0],
                                  expected.get_layer("target_out").get_weights()[0]), run  # the head trained
    record = {}
    trained = runs.train("depth1", data, batch, steps, record).model
    assert "head_steps" not in record  # every layer from the first step
    start = runs.fresh_model("depth1")
    assert not np.array_equal(trained.get_layer("conv1").get_weights()[0], start.get_layer("conv1").get_weights()[0])
