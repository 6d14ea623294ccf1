"""The seed-faithful reference for the benchmark: the tutorial's training logic, inefficiencies kept.

Per-element `map(preprocess)` with one-hot labels, shuffle then batch, the full model run forward (and
backward through the head) in the frozen phase with `layers[i].trainable = False` by index, fp32, batch 256,
constant learning rates, no op determinism. The architecture, the by-name weight copy and the validation
split are the pipeline's, so that the two sides train the same model on the same images.

One phase per process (so its peak RSS is its own): pretrain -> frozen -> finetune, and scratch.
    python benchmarks/reference.py --phase pretrain --data data --workdir /tmp/ref
Writes <workdir>/<phase>.json (training images, fit seconds, test accuracy) and <workdir>/<phase>.weights.h5.
"""

import argparse
import json
import time
from pathlib import Path

import keras
import tensorflow as tf

from tlpipe.core.data import load_npz, split_train_val
from tlpipe.core.model import FEATURES, build_model
from tlpipe.core.params import load_params
from tlpipe.core.transfer import load_weights, save_weights, transfer_by_name

# The seed's budget and rates (issue 3): epochs per phase; the frozen phase uses the larger rate.
EPOCHS = {"pretrain": 10, "frozen": 5, "finetune": 5, "scratch": 10}
LR = {"pretrain": 1e-3, "frozen": 1e-3, "finetune": 1e-4, "scratch": 1e-3}
BATCH = 256


def preprocess(image: tf.Tensor, label: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One example at a time, as the seed does: float image with a channel axis, one-hot label."""
    return tf.cast(image[..., None], tf.float32), tf.one_hot(tf.cast(label, tf.int32), 10)


def dataset(x, y, shuffle: bool) -> tf.data.Dataset:
    ds = tf.data.Dataset.from_tensor_slices((x, y)).map(preprocess)
    if shuffle:
        ds = ds.shuffle(10_000, seed=0)
    return ds.batch(BATCH)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--phase", choices=list(EPOCHS), required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--workdir", type=Path, required=True)
    args = parser.parse_args()
    params = load_params()
    keras.utils.set_random_seed(params.base.seed)
    arrays = load_npz(args.data / ("fashion_mnist.npz" if args.phase == "pretrain" else "mnist.npz"))
    x_train, y_train, x_val, y_val = split_train_val(arrays["x_train"], arrays["y_train"], params.base.val_size,
                                                     params.base.seed)
    model = build_model("source" if args.phase == "pretrain" else "mnist", params.model, params.base.image_size)
    if args.phase == "frozen":
        transfer_by_name(model, args.workdir / "pretrain.named.h5", params.transfer.layers)
        # The seed freezes by index; here the index is that of everything up to the features.
        cut = [layer.name for layer in model.layers].index(FEATURES)
        for i in range(cut + 1):
            model.layers[i].trainable = False
    elif args.phase == "finetune":
        load_weights(model, args.workdir / "frozen.named.h5")
    model.compile(keras.optimizers.Adam(LR[args.phase]), "categorical_crossentropy", metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(dataset(x_train, y_train, True), validation_data=dataset(x_val, y_val, False),
              epochs=EPOCHS[args.phase], verbose=2)
    fit_seconds = time.perf_counter() - start
    _, accuracy = model.evaluate(dataset(arrays["x_test"], arrays["y_test"], False), verbose=0)
    save_weights(model, args.workdir / f"{args.phase}.named.h5")
    record = {"train_images": EPOCHS[args.phase] * len(x_train), "fit_seconds": round(fit_seconds, 2),
              "test_accuracy": round(float(accuracy), 4)}
    (args.workdir / f"{args.phase}.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
