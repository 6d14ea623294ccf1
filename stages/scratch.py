"""scratch: the same target model from random init, trained on the transfer run's whole epoch budget.

Reads data/target.npz and params base.*, model.*, scratch.*.
Writes models/scratch.named.h5 and DVCLive logs in metrics/logs/scratch/.
Run alone: dvc repro scratch
"""

import argparse
from pathlib import Path

from tlpipe.core.cli import run
from tlpipe.core.model import build_model
from tlpipe.core.params import load_params
from tlpipe.core.target import load_target
from tlpipe.core.train import make_deterministic, train_and_save


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("data", type=Path)
    parser.add_argument("weights_out", type=Path)
    parser.add_argument("logs", type=Path)
    args = parser.parse_args()
    params = load_params()
    make_deterministic(params.base.seed, params.base.deterministic)
    target = load_target(args.data)
    data = target.split()
    model = build_model("target", params.model, params.base.image_size, len(target.classes))
    train_and_save(model, data, params.scratch, params.base, args.logs, args.weights_out, key="scratch")


if __name__ == "__main__":
    run(main)
