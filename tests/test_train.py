import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import tensorflow as tf

import stages.pretrain as pretrain_stage
import tlpipe.core.train as train_module
from tests.support import set_param, synthetic_arrays
from tlpipe.core.errors import PipelineError
from tlpipe.core.model import build_model
from tlpipe.core.params import load_params
from tlpipe.core.train import (
    BestWeights,
    Data,
    Recipe,
    Schedule,
    Trainer,
    deterministic_kernels,
    fit,
    make_dataset,
    make_deterministic,
    training_devices,
)
from tlpipe.core.transfer import set_trainable
from tlpipe.lab.points import head_features
from tlpipe.report.compare import compare_metrics, epochs_to_threshold, source_labels

EXTRACTOR = ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3"]


class NullLive:
    step = 0

    def log_metric(self, *_):
        pass

    def next_step(self):
        pass

    def end(self):  # DVCLive's Keras callback ends the run on train end
        pass


@pytest.fixture
def setup(params_file):
    params = load_params(params_file)
    arrays = synthetic_arrays(96, 1, seed=0)
    data = Data(arrays["x_train"][:64], arrays["y_train"][:64], arrays["x_train"][64:], arrays["y_train"][64:])
    phase = params.frozen_head.model_copy(update={"epochs": 2})
    return params, data, phase


def frozen_model(params, seed=0):
    make_deterministic(seed)
    model = build_model("target", params.model, params.base.image_size)
    set_trainable(model, EXTRACTOR, False, "transfer.freeze")
    return model


def test_a_frozen_extractor_stays_as_it_was_while_the_head_trains(setup):
    """frozen_head's one way to train: the whole model, its extractor untrainable (BatchNormalization then runs in
    inference mode, so its moving statistics stay too)."""
    params, data, phase = setup
    model = frozen_model(params)
    fit(model, data, phase, 24, 7, NullLive())
    untrained = frozen_model(params)
    for name in EXTRACTOR:
        for a, b in zip(untrained.get_layer(name).get_weights(), model.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    assert not np.allclose(untrained.get_layer("target_out").get_weights()[0],
                           model.get_layer("target_out").get_weights()[0])


def test_the_sweeps_cached_features_train_the_head_the_frozen_model_trains(setup):
    params, data, phase = setup
    # 24 leaves a partial last batch in training (64 = 24 + 24 + 16) and validation (32 = 24 + 8)
    batch_size = 24
    assert len(data.x_train) % batch_size and len(data.x_val) % batch_size
    full = frozen_model(params)
    fit(full, data, phase, batch_size, 7, NullLive())
    cached = frozen_model(params)
    head, features = head_features(cached, data, EXTRACTOR, batch_size)
    fit(head, features, phase, batch_size, 7, NullLive())
    # the same computation up to float rounding; other features or other batches move weights by ~1e-3 and more
    for name in ("target_dense", "target_out"):
        for a, b in zip(full.get_layer(name).get_weights(), cached.get_layer(name).get_weights(), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_cached_features_need_a_frozen_extractor(setup):
    params, data, _ = setup
    model = build_model("target", params.model, params.base.image_size)
    with pytest.raises(PipelineError, match=r"\['bn2', 'bn3', 'conv2', 'conv3'\] are not in transfer.freeze"):
        head_features(model, data, ["conv1", "bn1"], 16)


@pytest.mark.parametrize("shift", [0, 1])
def test_input_pipelines_do_not_autotune(shift):
    """Autotuning's teardown cost up to 1.9 s a fit (make_dataset's comment); every pipeline has it off."""
    x, y = np.zeros((8, 4, 4), np.uint8), np.zeros(8, np.uint8)
    dataset = make_dataset(x, y, 4, shuffle_seed=0 if shift else None, shift=shift)
    assert dataset.options().autotune.enabled is False


def test_same_seed_same_weights(setup):
    params, data, phase = setup
    runs = []
    for _ in range(2):
        make_deterministic(5)
        model = build_model("target", params.model, params.base.image_size)
        fit(model, data, phase, 16, 5, NullLive())
        runs.append(model.get_weights())
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_epochs_to_threshold():
    curve = [{"epoch": e, "val_accuracy": a} for e, a in [(1, 0.9), (2, 0.99), (3, 0.995)]]
    assert epochs_to_threshold(curve, 0.99) == 2
    assert epochs_to_threshold(curve, 0.999) is None


def test_compare_metrics():
    results = {
        "pretrain": {"test_accuracy": 0.9},
        "frozen_head": {"test_accuracy": 0.97},
        "transfer": {"test_accuracy": 0.993, "test_loss": 0.02},
        "scratch": {"test_accuracy": 0.990, "test_loss": 0.03},
    }
    curves = {
        "transfer": [{"epoch": 1, "val_accuracy": 0.98}, {"epoch": 2, "val_accuracy": 0.992}],
        "scratch": [{"epoch": 1, "val_accuracy": 0.97}, {"epoch": 2, "val_accuracy": 0.985}],
    }
    metrics = compare_metrics(results, curves, {"transfer": 10.123, "scratch": 20.0}, 0.99)
    assert metrics["gain"]["test_accuracy"] == pytest.approx(0.003)
    assert metrics["transfer"]["epochs_to_threshold"] == 2
    assert metrics["scratch"]["epochs_to_threshold"] is None
    assert metrics["transfer"]["train_seconds"] == 10.12
    assert metrics["scratch"]["best_val_accuracy"] == 0.985
    assert "zero_shot" not in metrics  # only where the source head reads the target's classes
    metrics = compare_metrics(results | {"zero_shot": {"test_accuracy": 0.96}}, curves, {"transfer": 1, "scratch": 1},
                              0.99)
    assert metrics["zero_shot"] == {"test_accuracy": 0.96}


def test_target_labels_map_to_the_source_head_only_where_every_class_is_a_source_class():
    digits = [str(d) for d in range(10)]
    y = np.array([0, 2, 1, 2])
    np.testing.assert_array_equal(source_labels(y, ["3", "5", "7"], digits), [3, 7, 5, 7])  # by name, not index
    assert source_labels(y, ["3", "5", "cat"], digits) is None
    assert source_labels(np.arange(10), digits, ["T-shirt/top", *digits[1:]]) is None


def test_an_in_place_dataset_lets_its_arrays_go_once_it_is_gone():
    """TensorFlow keeps a numpy_function's Python function for the whole process; the arrays must not stay with it."""
    import gc
    import weakref

    rng = np.random.default_rng(0)
    x, y = rng.random((40, 6)).astype(np.float32), rng.integers(0, 10, 40, dtype=np.uint8)
    alive = weakref.ref(x)
    expected = x[:8].copy()
    batches = iter(make_dataset(x, y, 8, in_place=True))
    del x
    gc.collect()
    assert alive() is not None  # the iterator keeps its dataset, and so the arrays
    np.testing.assert_array_equal(next(batches)[0].numpy(), expected)
    del batches
    gc.collect()
    assert alive() is None


def test_both_gather_paths_give_the_same_batches(monkeypatch):
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 255, (50, 6, 6), dtype=np.uint8), rng.integers(0, 10, 50, dtype=np.uint8)

    def batches(**kwargs) -> list:
        dataset = make_dataset(x, y, 8, shuffle_seed=3, repeat=True, **kwargs)
        return [(xb.numpy(), yb.numpy()) for xb, yb in dataset.take(9)]

    copies = []  # which calls of tf.constant copied the images
    constant = train_module.tf.constant

    def spy(value, *args, **kwargs):
        copies.append(value is x)
        return constant(value, *args, **kwargs)

    monkeypatch.setattr(train_module.tf, "constant", spy)
    in_tf = batches()  # small: copied into TensorFlow by default
    assert copies.count(True) == 1
    in_place = batches(in_place=True)
    monkeypatch.setattr(train_module, "IN_PLACE_BYTES", 0)  # the in-place NumPy path by size
    by_size = batches()
    assert copies.count(True) == 1  # neither in-place run copied the images
    assert in_tf[0][0].shape == (8, 6, 6, 1) and in_tf[0][0].dtype == np.float32
    for other in (in_place, by_size):
        for (a, la), (b, lb) in zip(in_tf, other, strict=True):
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(la, lb)


def test_best_weights_restores_the_start_when_the_start_was_best(setup):
    params, data, phase = setup
    make_deterministic(0)
    model = build_model("target", params.model, params.base.image_size)
    start = [w.copy() for w in model.get_weights()]
    Trainer(model, Recipe(0.01, "constant")).start(4)
    best = BestWeights(start_accuracy=1.1, steps_per_round=2)  # no round can beat the start
    model.fit(make_dataset(data.x_train, data.y_train, 16, shuffle_seed=7, repeat=True), epochs=2, steps_per_epoch=2,
              validation_data=make_dataset(data.x_val, data.y_val, 16), callbacks=[best], verbose=0)
    assert best.best_step == 0
    for a, b in zip(start, model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("message", [
    # TensorFlow's own wording (its kernels and tests), alone and inside a graph-execution error
    "{{function_node __wrapped__AdjustContrastv2_device_/job:localhost/replica:0/task:0/device:GPU:0}} A deterministic"
    " GPU implementation of AdjustContrastv2 is not currently available. [Op:AdjustContrastv2] name: ",
    "Graph execution error:\n\nDetected at node target_out/x\nA deterministic GPU implementation of fused batch-norm"
    " backprop, when training is disabled, is not currently available.\n\t [[{{node bn1/grad}}]]",
])
def test_op_without_a_deterministic_kernel_is_one_line_naming_the_param(message):
    with pytest.raises(PipelineError) as caught, deterministic_kernels():
        raise tf.errors.UnimplementedError(None, None, message)
    text = str(caught.value)
    assert "\n" not in text and "base.deterministic: false" in text and "params.yaml" in text
    assert "A deterministic GPU implementation of " in text and "{{" not in text and "[Op:" not in text


def test_other_unimplemented_errors_pass_through():
    with pytest.raises(tf.errors.UnimplementedError), deterministic_kernels():
        raise tf.errors.UnimplementedError(None, None, "Cast string to float is not supported")


def test_training_devices_names_where_the_weights_live(setup):
    params, _, _ = setup
    model = build_model("target", params.model, params.base.image_size)
    devices = training_devices(model)
    expected = {"GPU:0"} if tf.config.list_physical_devices("GPU") else {"CPU:0"}
    assert set(devices) == expected
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    cpu = [line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")]
    if "CPU:0" in devices and cpu:
        assert devices["CPU:0"] == cpu[0]


def test_training_devices_names_a_gpu_by_its_device_name(monkeypatch):
    """The GPU branch, on a CPU machine: weights placed on GPU:0 are recorded with TensorFlow's name for it."""
    def variable(device):
        return SimpleNamespace(value=SimpleNamespace(device=f"/job:localhost/replica:0/task:0/device:{device}"))

    model = SimpleNamespace(weights=[variable("GPU:0"), variable("GPU:0")])
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["gpu0"])
    monkeypatch.setattr(tf.config.experimental, "get_device_details",
                        lambda device: {"device_name": f"NVIDIA A100 ({device})"})
    assert training_devices(model) == {"GPU:0": "NVIDIA A100 (gpu0)"}


@pytest.mark.parametrize("batch_size, steps", [(None, 2), (16, 4)])
def test_a_phase_batch_size_overrides_the_base_one(setup, tmp_path, monkeypatch, batch_size, steps):
    """frozen_head.batch_size reaches the fit: 64 images are 2 steps an epoch at base.batch_size 32, 4 at 16."""
    params, data, phase = setup
    assert params.base.batch_size == 32
    monkeypatch.setattr(train_module, "open_live", lambda logs: NullLiveContext())
    monkeypatch.setattr(train_module, "log_run", lambda live, seconds, devices: None)
    fitted = []
    real_fit = train_module.fit
    monkeypatch.setattr(train_module, "fit",
                        lambda model, *args, **kwargs: fitted.append(model) or real_fit(model, *args, **kwargs))
    model = frozen_model(params)
    base = params.base.model_copy(update={"min_steps": 1})  # one pass: the batch size alone sets the steps
    train_module.train_and_save(model, data, phase.model_copy(update={"epochs": 1}), base, tmp_path / "logs",
                                tmp_path / "w.named.h5", key="frozen_head", batch_size=batch_size)
    assert fitted == [model]
    assert int(model.optimizer.iterations) == steps


def test_pretrain_trains_in_batches_of_its_own_batch_size(params_file, monkeypatch):
    """The pretrain stage hands pretrain.batch_size to the training loop: 24 here, a size that neither
    base.batch_size (32) nor frozen_head.batch_size (16) has."""
    set_param(params_file, "pretrain.batch_size", 24)
    monkeypatch.chdir(params_file.parent)
    monkeypatch.setattr(sys, "argv", ["pretrain", "fashion.npz", "w.named.h5", "logs"])
    monkeypatch.setattr(pretrain_stage, "load_train_val", lambda path, base: None)
    calls = []
    monkeypatch.setattr(pretrain_stage, "train_and_save", lambda *args, **kwargs: calls.append(kwargs))
    pretrain_stage.main()
    assert [call["batch_size"] for call in calls] == [24]


class NullLiveContext:
    def __enter__(self):
        return NullLive()

    def __exit__(self, *exc):
        return False


@pytest.mark.parametrize("lr, warmup", [(0.002, 0.1), (0.001, 0.0), (0.004, 0.5)])
def test_schedule_gives_keras_cosine_numbers_at_every_run_length(lr, warmup):
    """One Schedule, restarted for runs of other lengths, gives at every step exactly the numbers of a Keras
    CosineDecay made for that run (the pipeline's phases and the sweep's runs train under it)."""
    import keras

    schedule = Schedule()
    for total in (7, 300, 431):
        schedule.start(Recipe(lr, "cosine", warmup), total)
        warm = min(round(warmup * total), total - 1)
        cosine = keras.optimizers.schedules.CosineDecay
        own = cosine(lr, total) if not warm else cosine(0.0, total - warm, warmup_target=lr, warmup_steps=warm)
        for step in range(total + 3):
            assert float(schedule(step)) == float(own(step)), (total, step)
    schedule.start(Recipe(lr, "constant", warmup), 50)
    assert {float(schedule(step)) for step in (0, 25, 60)} == {float(np.float32(lr))}


def test_a_trainer_run_again_from_fresh_weights_matches_a_new_trainer(setup):
    """Trainer.start resets what a run depends on (weights, BatchNorm statistics, the dropout's seed state,
    Adam's slots and step, the schedule): a second run on a used Trainer equals the same run on a new one,
    with every part of a Recipe in use (warm-up, label smoothing, shifts)."""
    params, data, _ = setup
    recipe = Recipe(0.01, "cosine", warmup=0.25, label_smoothing=0.1, shift=1)

    def fresh():
        make_deterministic(3)
        return build_model("target", params.model, params.base.image_size)

    used = Trainer(fresh(), recipe, steps_per_execution=2)
    used.fit_steps(data, 4, 16, seed=1)  # an earlier, different run
    used.fit_steps(data, 6, 16, seed=5, fresh=fresh())
    new = Trainer(fresh(), recipe, steps_per_execution=2)
    new.fit_steps(data, 6, 16, seed=5)
    assert int(used.model.optimizer.iterations) == int(new.model.optimizer.iterations) == 6
    for a, b in zip(used.model.get_weights(), new.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    untrained = fresh().get_weights()
    assert any(not np.array_equal(a, b) for a, b in zip(untrained, new.model.get_weights(), strict=True))


def test_a_small_dataset_trains_at_least_min_steps_in_batches_no_larger_than_it(params_file):
    """Five images, two epochs, batch 32: each epoch goes round the images in batches of 5 until the phase has
    min_steps steps; a dataset with enough batches keeps one pass per epoch."""
    import keras

    from tlpipe.core.data import Data
    from tlpipe.core.train import Recipe, Trainer

    params = load_params(params_file)
    rng = np.random.default_rng(0)
    seen = []

    class Batches(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            seen.append(batch)

    for n, min_steps, expected in ((5, 9, 10), (40, 3, 4)):  # ceil(9 / 2) = 5 steps an epoch; 40 / 32 -> 2
        keras.utils.set_random_seed(0)
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.int32)
        trainer = Trainer(build_model("target", params.model, params.base.image_size), Recipe(0.001, "cosine"))
        seen.clear()
        trainer.fit_epochs(Data(x, y, x[:2], y[:2]), 2, 32, seed=0, callbacks=[Batches()], min_steps=min_steps)
        assert int(trainer.model.optimizer.iterations.numpy()) == expected == len(seen), n
