"""The one model builder: every model in the pipeline (pretrain, frozen head, fine-tune, scratch) comes from here."""

from __future__ import annotations

import keras
from keras import layers

from tlpipe.core.params import Model as ModelParams

ROLES = ("source", "target")
# The last layer of the feature extractor; everything after it is the task's head.
FEATURES = "flatten"


def build_model(role: str, arch: ModelParams, image_size: int, num_classes: int = 10) -> keras.Model:
    """Build the CNN for `role` (source: pretraining; target: transfer and scratch): a shared, named feature
    extractor and a head named by its role.

    The model takes raw uint8-valued pixels (as float or uint8) and rescales them itself, so every
    stage feeds it the same arrays. Call keras.utils.set_random_seed first for a reproducible init.
    """
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    inputs = keras.Input((image_size, image_size, 1), name="image")
    x = layers.Rescaling(1 / 255, name="rescale")(inputs)
    for i, filters in enumerate(arch.conv_filters, start=1):
        x = layers.Conv2D(filters, arch.kernel_size, padding="same", name=f"conv{i}")(x)
        x = layers.BatchNormalization(momentum=arch.bn_momentum, name=f"bn{i}")(x)
        x = layers.ReLU(name=f"relu{i}")(x)
        if i < len(arch.conv_filters):
            x = layers.MaxPooling2D(name=f"pool{i}")(x)
    x = layers.Flatten(name=FEATURES)(x)
    # The source's head is the seed's Dense(256); the target's is a new, differently named Dense(128) head.
    width = arch.pretrain_dense if role == "source" else arch.head_dense
    x = layers.Dense(width, activation="relu", name=f"{role}_dense")(x)
    x = layers.Dropout(arch.dropout, name=f"{role}_dropout")(x)
    outputs = layers.Dense(num_classes, activation="softmax", name=f"{role}_out")(x)
    return keras.Model(inputs, outputs, name=f"{role}_cnn")


def split_at_features(model: keras.Model) -> tuple[keras.Model, keras.Model]:
    """Return (extractor, head) models that share `model`'s layers, split after the `flatten` layer."""
    names = [layer.name for layer in model.layers]
    cut = names.index(FEATURES)
    extractor = keras.Model(model.input, model.get_layer(FEATURES).output, name="extractor")
    features = keras.Input(model.get_layer(FEATURES).output.shape[1:], name="features")
    x = features
    for layer in model.layers[cut + 1 :]:
        x = layer(x)
    return extractor, keras.Model(features, x, name="head")


def inference_model(model: keras.Model) -> keras.Model:
    """`model` for use outside the pipeline: takes (N, 28, 28) uint8 images as MNIST ships them.

    Adds only a channel axis in front (the rescaling to [0, 1] is already the model's first layer), so its
    predictions are the pipeline's. Built from standard layers only, so `keras.models.load_model` opens it in
    safe mode without this package.
    """
    size = model.input.shape[1]
    inputs = keras.Input((size, size), dtype="uint8", name="image")
    x = layers.Reshape((size, size, 1), name="channel")(inputs)
    return keras.Model(inputs, model(x), name=model.name)
