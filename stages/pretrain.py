"""pretrain: train the CNN on the source dataset (validation split held out) and save its weights by layer name.

Reads data/<pretrain.source>.npz (fashion_mnist or mnist) and params base.* (all but base.batch_size:
pretrain.batch_size is its own), model.*, pretrain.*.
Writes models/source.named.h5 and DVCLive logs in metrics/logs/pretrain/.
Run alone: dvc repro pretrain
"""

import argparse
from pathlib import Path

from tlpipe.core.cli import run
from tlpipe.core.model import build_model
from tlpipe.core.params import load_params
from tlpipe.core.train import load_train_val, make_deterministic, train_and_save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path)
    parser.add_argument("weights_out", type=Path)
    parser.add_argument("logs", type=Path)
    args = parser.parse_args()
    params = load_params()
    make_deterministic(params.base.seed, params.base.deterministic)
    data = load_train_val(args.data, params.base)
    model = build_model("source", params.model, params.base.image_size)
    train_and_save(
        model, data, params.pretrain, params.base, args.logs, args.weights_out,
        batch_size=params.pretrain.batch_size, key="pretrain",
    )


if __name__ == "__main__":
    run(main)
