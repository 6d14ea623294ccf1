import h5py
import keras
import numpy as np
import pytest

from tests.support import synthetic_arrays
from tlpipe.core.errors import PipelineError
from tlpipe.core.model import build_model
from tlpipe.core.params import load_params
from tlpipe.core.train import Data, Recipe, Trainer
from tlpipe.core.transfer import (
    batchnorm_layers,
    load_weights,
    save_weights,
    set_trainable,
    trainable_count,
    transfer_by_name,
)

EXTRACTOR = ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3"]


@pytest.fixture
def params(params_file):
    return load_params(params_file)


def build(task, params, seed):
    keras.utils.set_random_seed(seed)
    return build_model(task, params.model, params.base.image_size)


@pytest.fixture
def fashion_file(tmp_path, params):
    model = build("source", params, seed=1)
    path = tmp_path / "fashion.named.h5"
    save_weights(model, path)
    return model, path


def test_models_share_extractor_names_and_differ_in_heads(params):
    fashion, mnist = build("source", params, 0), build("target", params, 0)
    f_names, m_names = [layer.name for layer in fashion.layers], [layer.name for layer in mnist.layers]
    assert f_names[: f_names.index("flatten") + 1] == m_names[: m_names.index("flatten") + 1]
    assert "source_dense" in f_names and "target_dense" in m_names and "source_dense" not in m_names
    assert fashion.get_layer("source_dense").units == params.model.pretrain_dense
    assert mnist.get_layer("target_dense").units == params.model.head_dense
    assert batchnorm_layers(mnist) == ["bn1", "bn2", "bn3"]


def test_transfer_copies_exactly_the_listed_layers(params, tmp_path):
    # A fresh build fills BatchNorm (gamma 1, beta 0, moving mean 0, variance 1) and biases (0) with the same
    # constants in every model, so comparing fresh models would pass without copying them. Give every variable
    # of the source distinctive values instead (positive, so they are valid BatchNorm variances too).
    source = build("source", params, seed=1)
    rng = np.random.default_rng(0)
    for variable in source.weights:
        variable.assign(rng.uniform(0.5, 1.5, tuple(variable.shape)).astype(variable.dtype))
    path = tmp_path / "fashion.named.h5"
    save_weights(source, path)
    target = build("target", params, seed=2)
    head = ["target_dense", "target_out"]
    head_before = {n: [w.copy() for w in target.get_layer(n).get_weights()] for n in head}
    report = transfer_by_name(target, path, EXTRACTOR)
    assert sorted(report["copied"]) == sorted(EXTRACTOR)
    assert report["copied"]["conv1"] == [f"3x3x1x{params.model.conv_filters[0]}", str(params.model.conv_filters[0])]
    assert report["copied"]["bn1"] == [str(params.model.conv_filters[0])] * 4  # gamma, beta, moving mean, variance
    assert report["skipped"] == {"target_dense": "not in source", "target_out": "not in source"}
    assert report["source_unused"] == ["source_dense", "source_out"]
    for name in EXTRACTOR:
        got_vars, want_vars = target.get_layer(name).weights, source.get_layer(name).weights
        assert [v.path.split("/")[-1] for v in got_vars] == [v.path.split("/")[-1] for v in want_vars]
        for got, want in zip(got_vars, want_vars, strict=True):
            np.testing.assert_array_equal(np.asarray(got), np.asarray(want), err_msg=got.path)
    bn = target.get_layer("bn1")
    assert {"moving_mean", "moving_variance"} <= {v.path.split("/")[-1] for v in bn.weights}
    for name in head:
        for got, want in zip(target.get_layer(name).get_weights(), head_before[name], strict=True):
            np.testing.assert_array_equal(got, want)


def test_partial_transfer_reports_unlisted_layers(params, fashion_file):
    _, path = fashion_file
    report = transfer_by_name(build("target", params, 2), path, ["conv1", "bn1"])
    assert report["skipped"]["conv2"] == "not listed in transfer.layers"


def test_transfer_errors(params, fashion_file, tmp_path):
    _, path = fashion_file
    target = build("target", params, 2)
    with pytest.raises(PipelineError, match="transfer.layers names 'conv9'"):
        transfer_by_name(target, path, ["conv9"])
    with pytest.raises(PipelineError, match="has no layer 'target_dense' to transfer"):
        transfer_by_name(target, path, ["target_dense"])
    wider = params.model.model_copy(update={"conv_filters": [5, 8, 8]})
    keras.utils.set_random_seed(0)
    other = tmp_path / "other.named.h5"
    save_weights(build_model("source", wider, params.base.image_size), other)
    with pytest.raises(PipelineError, match=r"layer 'conv1' has weight shapes \[\(3, 3, 1, 5\), \(5,\)\] in the file"):
        transfer_by_name(target, other, EXTRACTOR)


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "weights file is missing"), (b"", "weights file is empty"), (b"not hdf5 at all", "not a readable HDF5")],
)
def test_bad_weight_files(params, tmp_path, content, message):
    path = tmp_path / "w.named.h5"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(PipelineError, match=message):
        load_weights(build("target", params, 0), path)


def test_foreign_hdf5_and_wrong_model_are_rejected(params, tmp_path, fashion_file):
    _, fashion_path = fashion_file
    with pytest.raises(PipelineError, match=r"missing: \['target_dense', 'target_out'\]"):
        load_weights(build("target", params, 0), fashion_path)
    foreign = tmp_path / "keras.weights.h5"
    with h5py.File(foreign, "w") as f:
        f.create_dataset("x", data=[1])
    with pytest.raises(PipelineError, match="is not a tlpipe-named-weights file"):
        load_weights(build("target", params, 0), foreign)


def test_save_load_round_trip(params, tmp_path):
    model = build("target", params, 3)
    path = tmp_path / "m.named.h5"
    save_weights(model, path)
    fresh = build("target", params, 4)
    load_weights(fresh, path)
    for a, b in zip(model.get_weights(), fresh.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_freeze_by_name_leaves_extractor_unchanged_after_head_step(params, fashion_file):
    _, path = fashion_file
    model = build("target", params, 2)
    transfer_by_name(model, path, EXTRACTOR)
    set_trainable(model, EXTRACTOR, False, "transfer.freeze")
    head = ["target_dense", "target_out"]
    expected = sum(int(np.prod(w.shape)) for n in head for w in model.get_layer(n).weights)
    assert trainable_count(model) == expected
    before = {n: [w.copy() for w in model.get_layer(n).get_weights()] for n in EXTRACTOR + head}
    arrays = synthetic_arrays(64, 1, seed=0)
    data = Data(arrays["x_train"], arrays["y_train"], arrays["x_train"][:8], arrays["y_train"][:8])
    Trainer(model, Recipe.of(params.frozen_head, "frozen_head")).fit_epochs(data, 1, 32, seed=0)
    for name in EXTRACTOR:  # BN moving statistics included: a frozen BN runs in inference mode
        for got, want in zip(model.get_layer(name).get_weights(), before[name], strict=True):
            np.testing.assert_array_equal(got, want)
    assert not np.array_equal(model.get_layer("target_dense").get_weights()[0], before["target_dense"][0])


def test_freeze_unknown_name(params):
    with pytest.raises(PipelineError, match="transfer.freeze names 'conv7'"):
        set_trainable(build("target", params, 0), ["conv7"], False, "transfer.freeze")
