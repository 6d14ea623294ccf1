import pytest

from tests.support import set_param
from tlpipe.errors import PipelineError
from tlpipe.params import load_params


def test_repository_params_are_valid():
    params = load_params("params.yaml")
    assert params.frozen_head.epochs + params.finetune.epochs == params.scratch.epochs
    # fair comparison: scratch trains under the same rules as the transfer run
    assert params.scratch.schedule == params.frozen_head.schedule == params.finetune.schedule
    assert params.scratch.lr == params.frozen_head.lr


def test_values_are_typed(params_file):
    params = load_params(params_file)
    assert params.base.batch_size == 32
    assert isinstance(params.finetune.lr, float)
    assert params.transfer.layers == ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3"]


def test_exponent_without_dot_is_a_number(params_file):
    # YAML 1.1 reads `1e-4` as a string; the schema accepts it as the number it is.
    text = params_file.read_text()
    assert "lr: 0.001" in text
    params_file.write_text(text.replace("lr: 0.001", "lr: 1e-3"))
    assert load_params(params_file).finetune.lr == pytest.approx(1e-3)


@pytest.mark.parametrize(
    ("dotted", "value", "message"),
    [
        ("finetune.lr_rate", 0.1, "unknown key 'finetune.lr_rate'; did you mean 'finetune.lr'?"),
        ("pretrain.epochs", "ten", "pretrain.epochs must be an integer, got 'ten'"),
        ("pretrain.epochs", 0, "pretrain.epochs must be >= 1, got 0"),
        ("scratch.lr", -0.1, "scratch.lr must be > 0, got -0.1"),
        ("finetune.lr", 0, "finetune.lr must be > 0, got 0"),
        ("base.batch_size", 0, "base.batch_size must be >= 1, got 0"),
        ("finetune.bn_inference", "yes", "finetune.bn_inference must be true or false"),
        ("pretrain.schedule", "step", "pretrain.schedule must be one of ['constant', 'cosine']"),
        ("model.dropout", 1.0, "model.dropout must be in [0, 1)"),
        ("transfer.layers", [], "transfer.layers must name at least one layer"),
        ("compare.threshold", 1.5, "compare.threshold must be in (0, 1]"),
        ("download.sha256.mnist.t10k-labels-idx1-ubyte", "abc", "download.sha256.mnist.t10k-labels-idx1-ubyte"),
        ("model.bn_momentum", 1.0, "model.bn_momentum must be in (0, 1), got 1.0"),
        ("sweep.seeds", [0, 0], "sweep.seeds lists a value twice"),
        ("sweep.budgets", [100, 5], "sweep.budgets[1] must be >= 20, got 5"),
        ("sweep.budgets", [], "sweep.budgets and sweep.seeds must each list at least one value"),
        ("sweep.head_fraction", 1, "sweep.head_fraction must be in (0, 1), got 1"),
        ("sweep.schedule", "step", "sweep.schedule must be one of ['constant', 'cosine']"),
    ],
)
def test_bad_values_name_the_key(params_file, dotted, value, message):
    set_param(params_file, dotted, value)
    with pytest.raises(PipelineError) as err:
        load_params(params_file)
    assert message in str(err.value)
    assert str(params_file) in str(err.value)


def test_missing_section(params_file):
    set_param(params_file, "finetune", delete=True)
    with pytest.raises(PipelineError, match="missing section 'finetune'"):
        load_params(params_file)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(PipelineError, match="cannot read"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("base: [unclosed\n")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_params(bad)
