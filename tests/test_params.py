import os
import subprocess

import pytest
import yaml

from tests.support import ROOT, committed_values, default_params, set_param, tiny_params
from tlpipe.core.errors import PipelineError
from tlpipe.core.params import load_params


def leaves(tree: dict, prefix: str = "") -> dict:
    """{dotted key: value} for every non-mapping value of a nested mapping."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= leaves(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_default_params_are_the_committed_ones():
    # Tests read the committed defaults, never the experiment `dvc exp run -S ...` left in the workspace file.
    shown = subprocess.run(["git", "show", "HEAD:./params.yaml"], cwd=ROOT, capture_output=True, text=True)
    if shown.returncode != 0:
        pytest.skip(f"no committed params.yaml at {ROOT}: {shown.stderr.strip()}")
    committed = leaves(yaml.safe_load(shown.stdout))
    workspace = leaves(yaml.safe_load((ROOT / "params.yaml").read_text()))
    defaults = leaves(default_params())
    assert defaults.keys() == workspace.keys()  # the schema the code under test reads
    for key, value in defaults.items():
        # every committed value; keys not committed yet (a schema change in progress) from the workspace
        assert value == committed.get(key, workspace[key]), key
    if committed.keys() == workspace.keys():
        assert default_params() == yaml.safe_load(shown.stdout)
    assert tiny_params({})["finetune"]["lr"] == committed.get("finetune.lr", workspace["finetune.lr"])


def test_default_params_ignore_the_workspace_experiment(tmp_path):
    env = os.environ | {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
                        "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com"}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"finetune": {"lr": 0.001, "epochs": 5}, "sweep": {"seeds": [0, 1, 2]}}))
    assert default_params(tmp_path) == yaml.safe_load(params.read_text())  # not a git work tree: the file
    for args in (["init", "-q"], ["add", "params.yaml"], ["-c", "commit.gpgsign=false", "commit", "-qm", "defaults"]):
        subprocess.run(["git", *args], cwd=tmp_path, env=env, check=True, capture_output=True)
    # an experiment changes values; an uncommitted schema change adds and removes keys
    params.write_text(yaml.safe_dump({"finetune": {"lr": 3e-4, "warmup": 0.1}, "sweep": {"seeds": [0]}}))
    assert default_params(tmp_path) == {"finetune": {"lr": 0.001, "warmup": 0.1}, "sweep": {"seeds": [0, 1, 2]}}
    assert committed_values({"a": 1}, {"a": {"b": 2}}) == {"a": {"b": 2}}  # a value became a mapping


def test_repository_params_are_valid(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(default_params()))
    params = load_params(path)
    assert params.frozen_head.epochs + params.finetune.epochs == params.scratch.epochs
    # fair comparison: scratch trains under the same rules as the transfer run
    assert params.scratch.schedule == params.frozen_head.schedule == params.finetune.schedule
    assert params.scratch.lr == params.finetune.lr  # the phases that train every layer


def test_values_are_typed(params_file):
    params = load_params(params_file)
    assert params.base.batch_size == 32
    assert isinstance(params.finetune.lr, float)
    assert params.transfer.layers == ["conv1", "bn1", "conv2", "bn2", "conv3", "bn3"]


def test_exponent_without_dot_is_a_number(params_file):
    # YAML 1.1 reads `1e-4` as a string; the schema accepts it as the number it is.
    text = params_file.read_text()
    assert "lr: 0.004" in text
    params_file.write_text(text.replace("lr: 0.004", "lr: 4e-3"))
    assert load_params(params_file).finetune.lr == pytest.approx(4e-3)


# (dotted key, bad value, the key the message names, a fragment of the problem: pydantic's words or our rule's)
@pytest.mark.parametrize(
    ("dotted", "value", "key", "problem"),
    [
        ("finetune.lr_rate", 0.1, "finetune.lr_rate", "not permitted; did you mean 'finetune.lr'?"),
        ("pretrain.epochs", "ten", "pretrain.epochs", "valid integer (got 'ten')"),
        ("pretrain.epochs", 0, "pretrain.epochs", "greater than or equal to 1 (got 0)"),
        ("scratch.lr", -0.1, "scratch.lr", "greater than 0 (got -0.1)"),
        ("finetune.lr", 0, "finetune.lr", "greater than 0 (got 0)"),
        ("base.batch_size", 0, "base.batch_size", "greater than or equal to 1"),
        ("finetune.bn_inference", "yes", "finetune.bn_inference", "valid boolean (got 'yes')"),
        ("pretrain.schedule", "step", "pretrain.schedule", "'constant' or 'cosine' (got 'step')"),
        ("model.dropout", 1.0, "model.dropout", "less than 1 (got 1.0)"),
        ("transfer.layers", [], "transfer.layers", "must name at least one layer"),
        ("compare.threshold", 1.5, "compare.threshold", "less than or equal to 1 (got 1.5)"),
        ("download.sha256.mnist.t10k-labels-idx1-ubyte", "abc", "download.sha256.mnist.t10k-labels-idx1-ubyte",
         "must be 64 lowercase hex digits (got 'abc')"),
        ("model.bn_momentum", 1.0, "model.bn_momentum", "less than 1 (got 1.0)"),
        ("sweep.seeds", [0, 0], "sweep.seeds", "lists a value twice"),
        ("sweep.budgets", [100, 5], "sweep", "budgets has 5; a budget of labelled images in all must be >= 20"),
        ("sweep.budgets", [100, 0], "sweep.budgets[1]", "greater than or equal to 1 (got 0)"),
        ("target.preprocess", "crop", "target.preprocess", "'mnist' or 'resize' (got 'crop')"),
        ("target.path", " ", "target.path", "must name data/mnist.npz or a folder of class folders"),
        ("target.test_fraction", 1.0, "target.test_fraction", "less than 1 (got 1.0)"),
        ("pretrain.source", "cifar10", "pretrain.source", "'fashion_mnist' or 'mnist' (got 'cifar10')"),
        ("base.min_steps", 0, "base.min_steps", "greater than or equal to 1 (got 0)"),
        ("sweep.budgets", [], "sweep", "budgets and seeds must each list at least one value"),
        ("sweep.head_fraction", 1, "sweep.head_fraction", "less than 1 (got 1)"),
        ("sweep.schedule", "step", "sweep.schedule", "'constant' or 'cosine' (got 'step')"),
    ],
)
def test_bad_values_name_the_key(params_file, dotted, value, key, problem):
    set_param(params_file, dotted, value)
    with pytest.raises(PipelineError) as err:
        load_params(params_file)
    assert str(err.value).startswith(f"{params_file}: {key}: ")
    assert problem in str(err.value)


def test_missing_section(params_file):
    set_param(params_file, "finetune", delete=True)
    with pytest.raises(PipelineError, match=f"^{params_file}: finetune: .*required"):
        load_params(params_file)


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(PipelineError, match="cannot read"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("base: [unclosed\n")
    with pytest.raises(PipelineError, match="not valid YAML"):
        load_params(bad)


def error_line(params_file, **changes) -> str:
    """The whole PipelineError message after setting each dotted key (given as section__key) in params_file."""
    for dotted, value in changes.items():
        set_param(params_file, dotted.replace("__", "."), value)
    with pytest.raises(PipelineError) as err:
        load_params(params_file)
    return str(err.value)


@pytest.mark.parametrize(
    ("changes", "key", "problem"),
    [
        # unknown key, with the closest known key
        ({"sweep__head_frac": 0.5}, "sweep.head_frac", "did you mean 'sweep.head_fraction'?"),
        # wrong type: strict, a bool is not an integer and a string is not a bool
        ({"base__seed": True}, "base.seed", "valid integer (got True)"),
        ({"pretrain__flip": "no"}, "pretrain.flip", "valid boolean (got 'no')"),
        # out of range: a two-sided bound, and a bound on a list item
        ({"finetune__shift": 9}, "finetune.shift", "less than or equal to 8 (got 9)"),
        ({"model__conv_filters": [4, 0, 8]}, "model.conv_filters[1]", "greater than or equal to 1 (got 0)"),
        # a Literal choice
        ({"scratch__schedule": "linear"}, "scratch.schedule", "'constant' or 'cosine' (got 'linear')"),
        # a cross-key rule: the section, then its keys
        ({"pretrain__schedule": "constant", "pretrain__warmup": 0.1}, "pretrain", "warmup needs schedule: cosine"),
    ],
)
def test_error_is_one_whole_line(params_file, changes, key, problem):
    line = error_line(params_file, **changes)
    assert line.startswith(f"{params_file}: {key}: ") and problem in line and "\n" not in line


def test_cross_key_rules_allow_the_valid_combinations(params_file):
    set_param(params_file, "pretrain.warmup", 0.1)  # warmup with cosine
    set_param(params_file, "frozen_head.shift", 2)
    params = load_params(params_file)
    assert params.pretrain.warmup == 0.1 and params.frozen_head.shift == 2


def test_a_renamed_key_is_reported_as_unknown_not_missing(params_file):
    # a typo both adds an unknown key and drops a known one: the did-you-mean is the useful message
    set_param(params_file, "finetune.lr", delete=True)
    line = error_line(params_file, finetune__lr_rate=0.1)
    assert line.startswith(f"{params_file}: finetune.lr_rate: ") and line.endswith("; did you mean 'finetune.lr'?")


def test_missing_key(params_file):
    set_param(params_file, "finetune.lr", delete=True)
    with pytest.raises(PipelineError) as err:
        load_params(params_file)
    assert str(err.value).startswith(f"{params_file}: finetune.lr: ") and "required" in str(err.value)


def test_loaded_params_are_read_only(params_file):
    params = load_params(params_file)
    with pytest.raises(ValueError, match="frozen"):
        params.pretrain.epochs = 3
    wider = params.model.model_copy(update={"conv_filters": [5, 8, 8]})
    assert wider.conv_filters == [5, 8, 8] and params.model.conv_filters == [4, 8, 8]
