"""finetune: target epochs N+1..N+M. Load the frozen-head model, unfreeze it, train everything at a low rate.

Reads models/frozen_head.named.h5, data/target.npz and params base.*, model.*, frozen_head.epochs, finetune.*.
Writes models/finetune.named.h5 and DVCLive logs in metrics/logs/finetune/.
Run alone: dvc repro finetune
"""

import argparse
from pathlib import Path

from tlpipe.core.cli import run
from tlpipe.core.model import build_model
from tlpipe.core.params import load_params
from tlpipe.core.target import load_target
from tlpipe.core.train import make_deterministic, train_and_save
from tlpipe.core.transfer import batchnorm_layers, load_weights, set_trainable


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("weights", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("weights_out", type=Path)
    parser.add_argument("logs", type=Path)
    args = parser.parse_args()
    params = load_params()
    make_deterministic(params.base.seed, params.base.deterministic)
    target = load_target(args.data)
    data = target.split()
    model = build_model("target", params.model, params.base.image_size, len(target.classes))
    load_weights(model, args.weights)
    if params.finetune.bn_inference:
        # Keras guide: keep BatchNormalization frozen (inference mode) so fine-tuning does not wreck its statistics.
        set_trainable(model, batchnorm_layers(model), False, "finetune.bn_inference")
    first_epoch = params.frozen_head.epochs + 1
    train_and_save(model, data, params.finetune, params.base, args.logs, args.weights_out, key="finetune",
                   first_epoch=first_epoch)


if __name__ == "__main__":
    run(main)
