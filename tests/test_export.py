"""The export stage: standard Keras files that open without this package and predict what the pipeline does."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.support import run_main, run_stage
from tlpipe.core.model import build_model
from tlpipe.core.params import load_params
from tlpipe.core.target import TargetData, save_target
from tlpipe.core.train import evaluate
from tlpipe.core.transfer import save_weights

# Runs in a fresh interpreter that never imports tlpipe: what a user of the exported file has.
OUTSIDE = """
import json, sys
import keras, numpy as np
assert not any(m.startswith("tlpipe") for m in sys.modules)
x = np.load(sys.argv[2])
model = keras.models.load_model(sys.argv[1])  # safe_mode=True is the default
probs = model.predict(x, batch_size=int(sys.argv[3]), verbose=0)
assert not any(m.startswith("tlpipe") for m in sys.modules)
print(json.dumps(probs.argmax(axis=1).tolist()))
"""


# A target's class names as its folders spelled them: spaces and non-ASCII letters travel into the model files
CLASSES = ["null", "eins", "zwei", "drei", "vier", "fünf", "sechs", "sieben", "acht", "neun ⑨"]


@pytest.fixture(autouse=True)
def target_file(tmp_path):
    """target.npz in tmp_path, whose class names export puts into the target models."""
    x = np.zeros((20, 28, 28), np.uint8)
    y = np.arange(20, dtype=np.int32) % 10
    save_target(tmp_path / "target.npz", TargetData(x, y, np.arange(10, 20), np.arange(10), x, y, CLASSES))


def classes_in(model_path) -> list[str]:
    import zipfile

    with zipfile.ZipFile(model_path) as archive:
        return json.loads(archive.read("metadata.json"))["classes"]


def outside(model_path, images_path, batch_size: int) -> list[int]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"TF_CPP_MIN_LOG_LEVEL": "3"}
    result = subprocess.run([sys.executable, "-c", OUTSIDE, str(model_path), str(images_path), str(batch_size)],
                            capture_output=True, text=True, env=env, cwd=model_path.parent)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_exported_models_open_without_the_package_and_predict_as_the_pipeline(tmp_path, params_file):
    params = load_params(params_file)
    weights = {}
    for name, task in (("source", "source"), ("finetune", "target"), ("scratch", "target")):
        keras.utils.set_random_seed(len(name))
        model = build_model(task, params.model, params.base.image_size)
        save_weights(model, tmp_path / f"{name}.named.h5")
        weights[name] = model
    result = run_main(tmp_path, "export", "--source", "source.named.h5", "--finetune", "finetune.named.h5",
                       "--scratch", "scratch.named.h5", "--target", "target.npz", "--out", "models")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "models"
    assert sorted(p.name for p in out.iterdir()) == [
        "scratch.keras", "scratch.savedmodel", "source.keras", "transfer.keras", "transfer.savedmodel"]
    assert (out / "transfer.savedmodel" / "saved_model.pb").is_file()
    images = np.random.default_rng(0).integers(0, 256, (37, 28, 28), dtype=np.uint8)
    np.save(tmp_path / "images.npy", images)
    labels = np.zeros(len(images), np.uint8)
    for exported, name in (("transfer", "finetune"), ("scratch", "scratch"), ("source", "source")):
        expected = evaluate(weights[name], images, labels, 16)["predicted"].tolist()
        assert outside(out / f"{exported}.keras", tmp_path / "images.npy", 16) == expected, exported
    assert not list(tmp_path.rglob(".*.tmp*")), "temporary files left behind"
    assert classes_in(out / "transfer.keras") == classes_in(out / "scratch.keras") == CLASSES
    assert classes_in(out / "source.keras")[0] == "T-shirt/top"  # pretrain.source: fashion_mnist
    # A second export, in another process (other memory addresses), writes the same bytes
    again = run_stage(tmp_path, "export", "--source", "source.named.h5", "--finetune", "finetune.named.h5",
                      "--scratch", "scratch.named.h5", "--target", "target.npz", "--out", "again")
    assert again.returncode == 0, again.stderr
    for name in ("source", "transfer", "scratch"):
        assert (out / f"{name}.keras").read_bytes() == (tmp_path / "again" / f"{name}.keras").read_bytes(), name


def test_a_weights_file_holding_nan_is_refused_before_any_output(tmp_path, params_file):
    params = load_params(params_file)
    for name, task in (("source", "source"), ("finetune", "target"), ("scratch", "target")):
        model = build_model(task, params.model, params.base.image_size)
        if name == "scratch":
            kernel, bias = model.get_layer("conv2").get_weights()
            kernel[0, 0, 0, 0] = np.nan
            model.get_layer("conv2").set_weights([kernel, bias])
        save_weights(model, tmp_path / f"{name}.named.h5")
    result = run_main(tmp_path, "export", "--source", "source.named.h5", "--finetune", "finetune.named.h5",
                       "--scratch", "scratch.named.h5", "--target", "target.npz", "--out", "models")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: export: scratch.named.h5: layer 'conv2' holds NaN or infinite weights; the run that wrote them "
        "diverged: re-run that stage with a lower learning rate"]
    assert not (tmp_path / "models").exists()


def test_export_with_a_bad_weights_file_leaves_no_output(tmp_path, params_file):
    (tmp_path / "empty.named.h5").write_bytes(b"")
    result = run_main(tmp_path, "export", "--source", "empty.named.h5", "--finetune", "empty.named.h5",
                       "--scratch", "empty.named.h5", "--target", "target.npz", "--out", "models")
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "error: export: empty.named.h5: weights file is empty; re-run the stage that writes it (`dvc repro -f`)"]
    assert not (tmp_path / "models").exists()
