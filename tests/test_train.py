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
from tlpipe.core.model import build_model, split_at_features
from tlpipe.core.params import load_params
from tlpipe.core.report import compare_metrics, epochs_to_threshold
from tlpipe.core.train import (
    BestWeights,
    Data,
    Recipe,
    Schedule,
    Trainer,
    deterministic_kernels,
    fit,
    fit_head_on_features,
    fit_head_streamed,
    frozen_extractor,
    make_dataset,
    make_deterministic,
    training_devices,
)
from tlpipe.core.transfer import set_trainable

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


def test_cached_features_give_the_same_head_as_full_forward(setup):
    params, data, phase = setup
    # 24 leaves a partial last batch in training (64 = 24 + 24 + 16) and validation (32 = 24 + 8)
    batch_size = 24
    assert len(data.x_train) % batch_size and len(data.x_val) % batch_size
    full = frozen_model(params)
    fit(full, data, phase, batch_size, 7, NullLive())
    cached = frozen_model(params)
    fit_head_on_features(cached, data, phase, batch_size, 7, NullLive())
    # The same computation, up to float rounding: the cache comes from frozen_extractor (batch norm folded into
    # the convolutions), the full forward from the layers one by one. A wrong cache (other features, other
    # batches) moves weights by ~1e-3 and more.
    for name in ("target_dense", "target_out"):
        for a, b in zip(full.get_layer(name).get_weights(), cached.get_layer(name).get_weights(), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    # and training really moved the head, so the comparison is not vacuous
    untrained = frozen_model(params).get_layer("target_out").get_weights()[0]
    assert not np.allclose(untrained, full.get_layer("target_out").get_weights()[0])


def random_statistics(model, seed=0):
    """Convolution biases, BatchNormalization scales, offsets and moving statistics far from their initial 0 and
    1, so that folding each of them is tested."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if layer.name.startswith("bn"):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 2.0, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n),
                               rng.uniform(0.2, 3.0, n)])  # gamma, beta, moving mean, moving variance
        elif layer.name.startswith("conv"):
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.5, bias.shape)])


def assert_folds_to_the_layers(extractor, images):
    layers = extractor(tf.constant(images, tf.float32), training=False).numpy()
    run = frozen_extractor(extractor)
    folded = run(images).numpy()
    assert run.folded
    assert folded.shape == layers.shape == (len(images), *extractor.output.shape[1:])
    assert np.abs(layers).max() > 1  # not all zeros after the ReLUs
    # Measured: max abs difference ~1e-6 (float rounding); a missed bias, epsilon, mean or offset is off by 1e-3+
    np.testing.assert_allclose(folded, layers, rtol=1e-4, atol=1e-5)


def test_frozen_extractor_computes_the_extractor_layers(setup):
    params, data, _ = setup
    model = frozen_model(params)
    random_statistics(model)
    extractor = split_at_features(model)[0]
    assert_folds_to_the_layers(extractor, data.x_train[:16].reshape(16, 28, 28, 1))


def test_frozen_extractor_folds_the_options_the_builder_does_not_use():
    """No conv bias, BatchNormalization without scale or offset, a convolution without one, valid padding."""
    import keras

    make_deterministic(0)
    inputs = keras.Input((12, 12, 1))
    x = keras.layers.Rescaling(0.5, offset=-1.0)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="valid", use_bias=False)(x)
    x = keras.layers.BatchNormalization(scale=False, center=False)(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Conv2D(5, 3, padding="same")(x)
    x = keras.layers.MaxPooling2D(padding="same")(x)
    x = keras.layers.ReLU()(x)
    extractor = keras.Model(inputs, keras.layers.Flatten()(x))
    rng = np.random.default_rng(1)
    for layer in extractor.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.normal(0, 0.5, 4), rng.uniform(0.2, 3.0, 4)])
        elif isinstance(layer, keras.layers.Conv2D) and layer.use_bias:
            layer.set_weights([layer.get_weights()[0], rng.normal(0, 0.5, 5)])
        layer.trainable = False
    assert_folds_to_the_layers(extractor, rng.integers(0, 256, (8, 12, 12, 1)).astype(np.float32))


def test_frozen_extractor_runs_the_layers_it_cannot_fold():
    import keras

    inputs = keras.Input((4, 4, 1))
    extractor = keras.Model(inputs, keras.layers.Dropout(0.5, name="drop")(inputs))
    run = frozen_extractor(extractor)
    images = np.arange(32, dtype=np.float32).reshape(2, 4, 4, 1)
    assert not run.folded
    np.testing.assert_array_equal(run(images).numpy(), images)  # Dropout in inference mode


@pytest.mark.parametrize("shift", [0, 1])
def test_streamed_head_matches_the_full_forward_and_the_cache(setup, shift):
    """Streamed against the whole model, with and without shifts; without, against the cache too."""
    params, data, phase = setup
    phase = phase.model_copy(update={"shift": shift})
    batch_size = 24  # a partial last batch in training and validation
    trained = {}
    ways = (("full", fit), ("stream", fit_head_streamed)) + ((("cache", fit_head_on_features),) if not shift else ())
    for name, train in ways:
        model = frozen_model(params)
        train(model, data, phase, batch_size, 7, NullLive())
        trained[name] = model
    for name in ("target_dense", "target_out"):
        weights = {k: trained[k].get_layer(name).get_weights() for k in trained}
        for other in set(trained) - {"stream"}:
            for a, b in zip(weights[other], weights["stream"], strict=True):
                np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    # the extractor was left as it was
    untrained = frozen_model(params)
    for name in ("conv3", "bn3"):
        for a, b in zip(untrained.get_layer(name).get_weights(), trained["stream"].get_layer(name).get_weights(),
                        strict=True):
            np.testing.assert_array_equal(a, b)


def test_streamed_fit_trains_the_whole_model_on_a_gpu(setup, monkeypatch):
    """On a GPU the extractor stays inside the training step (an input pipeline's functions run on the CPU)."""
    params, data, phase = setup
    calls = []
    monkeypatch.setattr(tf.config, "list_physical_devices", lambda kind=None: ["gpu0"] if kind == "GPU" else [])
    monkeypatch.setattr(train_module, "fit", lambda model, *args, **kwargs: calls.append((model, kwargs)) or 0.0)
    model = frozen_model(params)
    fit_head_streamed(model, data, phase, 16, 7, NullLive())
    assert calls == [(model, {"key": "", "min_steps": 1})]


def test_streamed_fit_trains_a_partly_frozen_extractor_whole(setup):
    """With trainable extractor layers there is nothing fixed to stream: the model trains as `fit` trains it."""
    params, data, phase = setup
    runs = []
    for train in (fit, fit_head_streamed):
        make_deterministic(0)
        model = build_model("target", params.model, params.base.image_size)
        set_trainable(model, ["conv1", "bn1"], False, "transfer.freeze")
        before = model.get_layer("conv3").get_weights()[0].copy()
        train(model, data, phase, 16, 7, NullLive())
        assert not np.allclose(before, model.get_layer("conv3").get_weights()[0])
        runs.append(model.get_weights())
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_cached_features_need_a_frozen_extractor(setup):
    params, data, phase = setup
    make_deterministic(0)
    model = build_model("target", params.model, params.base.image_size)
    set_trainable(model, ["conv1", "bn1"], False, "transfer.freeze")
    with pytest.raises(PipelineError, match="cache_features needs the whole extractor frozen.*"
                       r"\['bn2', 'bn3', 'conv2', 'conv3'\] are not in transfer.freeze; add them to "
                       "transfer.layers and transfer.freeze, or set frozen_head.cache_features: false$"):
        fit_head_on_features(model, data, phase, 16, 7, NullLive())


@pytest.mark.parametrize("shift", [0, 1])
def test_input_pipelines_do_not_autotune(shift):
    """Autotuning's teardown cost up to 1.9 s a fit (make_dataset's comment); every pipeline has it off."""
    x, y = np.zeros((8, 4, 4), np.uint8), np.zeros(8, np.uint8)
    dataset = make_dataset(x, y, 4, shuffle_seed=0 if shift else None, shift=shift, extract=lambda b: b)
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


@pytest.mark.parametrize("head", ["", "stream", "cache"])
@pytest.mark.parametrize("batch_size, steps", [(None, 2), (16, 4)])
def test_a_phase_batch_size_overrides_the_base_one(setup, tmp_path, monkeypatch, batch_size, steps, head):
    """frozen_head.batch_size reaches the fit: 64 images are 2 steps an epoch at base.batch_size 32, 4 at 16,
    on the images, streamed through the frozen extractor and on the cached features."""
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
                                tmp_path / "w.named.h5", key="frozen_head", head=head, batch_size=batch_size)
    (trained,) = fitted  # the model itself, or the head on the streamed or cached features
    assert (trained is model) == (head == "")
    assert int(trained.optimizer.iterations) == steps


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
