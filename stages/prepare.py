"""prepare: the target dataset (params target.path) as the one array file every target stage reads.

Reads params target.*, base.seed, base.val_size, base.image_size and target.path: data/mnist.npz (the download
stage's; base.val_size random training images are held out for validation), or a folder of class folders (see
tlpipe.apps.folder; target.val_fraction of each class for validation, test/ or target.test_fraction for the test).
Writes data/target.npz and metrics/prepare.json (images per class and split, unlabelled images read, files skipped
and why, sizes seen).
Run alone: dvc repro prepare
"""

import argparse
from pathlib import Path

from tlpipe.apps.folder import prepare_target
from tlpipe.core.cli import run
from tlpipe.core.io import check_writable, write_json
from tlpipe.core.params import load_params
from tlpipe.core.target import save_target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out", type=Path, help="data/target.npz")
    parser.add_argument("report_out", type=Path, help="metrics/prepare.json")
    args = parser.parse_args()
    params = load_params()
    check_writable(args.out, args.report_out)
    data, report = prepare_target(params.target, params.base)
    for name, counts in report["images"].items():
        print(f"{name}: {counts['train']} train, {counts['val']} validation, {counts['test']} test")
    if "validated_on_training_images" in report:
        names = ", ".join(report["validated_on_training_images"])
        print(f"one labelled image in class(es) {names}: trained on, and validated on as well (no held-out image)")
    if "unlabelled" in report:
        u = report["unlabelled"]
        print(f"unlabelled: {u['read']} images read, {u['skipped']} skipped (checked and counted; not trained on)")
    if report["skipped"]:
        print(f"skipped {report['skipped']} file(s), each listed with the reason in {args.report_out}")
    save_target(args.out, data)
    write_json(args.report_out, report)


if __name__ == "__main__":
    run(main)
