"""export: the trained models as standard Keras files, for use outside the pipeline.

Reads models/{source,finetune,scratch}.named.h5 (the pipeline's by-name weights), the class names in
data/target.npz and params base.image_size, model.*, pretrain.source, target.path, target.preprocess.
Writes models/source.keras (the pretrained model), models/transfer.keras, models/scratch.keras (complete
inference models in Keras 3's native format: (N, 28, 28) uint8 images in, one probability per class out; open
them with `keras.models.load_model`; each carries its class names, and the target models how their images were
made, for predict) and a TensorFlow SavedModel of each target model (models/transfer.savedmodel/,
models/scratch.savedmodel/, made with `model.export` for TensorFlow Serving).
Run alone: dvc repro export
"""

import argparse
from pathlib import Path

from tlpipe.core.cli import run
from tlpipe.core.data import CLASS_NAMES
from tlpipe.core.errors import PipelineError
from tlpipe.core.io import atomic_dir, atomic_path, check_writable, reproducible_zip
from tlpipe.core.model import build_model, inference_model
from tlpipe.core.params import load_params
from tlpipe.core.target import input_form, target_classes
from tlpipe.core.transfer import load_weights

# output name -> (role, weights argument)
MODELS = {"source": ("source", "source"), "transfer": ("target", "finetune"), "scratch": ("target", "scratch")}
SERVED = ("transfer", "scratch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    for name in ("source", "finetune", "scratch"):
        parser.add_argument(f"--{name}", type=Path, required=True, help=f"models/{name}.named.h5")
    parser.add_argument("--target", type=Path, required=True, help="data/target.npz (its class names)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the .keras files and SavedModels")
    args = parser.parse_args()
    import tensorflow as tf  # for its error types, once the arguments are known good

    params = load_params()
    check_writable(args.out / "model.keras")
    classes = {"source": CLASS_NAMES[params.pretrain.source], "target": target_classes(args.target)}
    # what predict needs to know: the class names, and how the training images were made
    metadata = {"source": {"classes": classes["source"]},
                "target": {"classes": classes["target"],
                          "preprocess": input_form(params.target.path, params.target.preprocess)}}
    models = {}
    for name, (role, weights) in MODELS.items():  # load all first: a bad weights file leaves no new output
        model = build_model(role, params.model, params.base.image_size, len(classes[role]))
        load_weights(model, getattr(args, weights))
        models[name] = inference_model(model)
    for name, model in models.items():
        with atomic_path(args.out / f"{name}.keras") as tmp:
            model.save(tmp)  # the temporary name keeps the .keras suffix that Keras requires
            # the same model gives the same bytes (and md5 in dvc.lock) on every run; the class names travel with it
            reproducible_zip(tmp, metadata[MODELS[name][0]])
        if name in SERVED:
            with atomic_dir(args.out / f"{name}.savedmodel") as tmp:
                try:
                    model.export(str(tmp), format="tf_saved_model", verbose=False)
                except tf.errors.OpError as e:  # TensorFlow's own writes (a full disk, say) fail with these
                    raise PipelineError(f"{args.out / f'{name}.savedmodel'}: cannot write ({e.message})") from e


if __name__ == "__main__":
    run(main)
