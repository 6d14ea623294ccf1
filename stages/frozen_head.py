"""frozen_head: target epochs 1..N. Transfer the source extractor by layer name, freeze it, train the new head.

Reads models/source.named.h5, data/target.npz and params base.seed, base.image_size, base.min_steps,
base.deterministic (frozen_head.batch_size is its own), model.*, transfer.*, frozen_head.*.
The extractor is frozen (its BatchNormalization in inference mode), so only the head's weights train.
Writes models/frozen_head.named.h5, metrics/transfer_report.json (what was copied, skipped, frozen)
and DVCLive logs in metrics/logs/frozen_head/.
Run alone: dvc repro frozen_head
"""

import argparse
from pathlib import Path

from tlpipe.core.cli import run
from tlpipe.core.model import build_model
from tlpipe.core.params import load_params
from tlpipe.core.target import load_target
from tlpipe.core.train import make_deterministic, train_and_save
from tlpipe.core.transfer import set_trainable, trainable_count, transfer_by_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("source_weights", type=Path)
    parser.add_argument("data", type=Path)
    parser.add_argument("weights_out", type=Path)
    parser.add_argument("report_out", type=Path)
    parser.add_argument("logs", type=Path)
    args = parser.parse_args()
    params = load_params()
    make_deterministic(params.base.seed, params.base.deterministic)
    target = load_target(args.data)
    data = target.split()
    model = build_model("target", params.model, params.base.image_size, len(target.classes))
    report = transfer_by_name(model, args.source_weights, params.transfer.layers)
    set_trainable(model, params.transfer.freeze, False, "transfer.freeze")
    report["frozen"] = params.transfer.freeze
    report["trainable_params"] = trainable_count(model)
    train_and_save(
        model, data, params.frozen_head, params.base, args.logs, args.weights_out,
        batch_size=params.frozen_head.batch_size, key="frozen_head", report=(args.report_out, report),
    )


if __name__ == "__main__":
    run(main)
