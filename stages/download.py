"""download: fetch MNIST and Fashion-MNIST, verify every payload's SHA-256, write data/<name>.npz.

Reads params `base.image_size` and `download.*`; env DATA_MIRROR (a folder with mnist/ and fashion-mnist/).
Writes data/mnist.npz and data/fashion_mnist.npz (x_train, y_train, x_test, y_test; uint8).
Run alone: DATA_MIRROR=../shared/datasets dvc repro download
"""

import argparse
import os
from pathlib import Path

from tlpipe.core.cli import run
from tlpipe.core.data import DATASETS, load_dataset, save_npz, sources_for
from tlpipe.core.params import load_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("out_dir", type=Path, help="folder for <dataset>.npz")
    args = parser.parse_args()
    params = load_params()
    dl = params.download
    mirror = os.environ.get("DATA_MIRROR") or None
    datasets = {}
    for name, folder in DATASETS.items():
        sources = sources_for(folder, mirror, dl.dirs.get(folder, []), dl.urls.get(folder, []))
        datasets[name] = load_dataset(
            name, sources, dl.sha256.get(folder, {}), params.base.image_size, dl.timeout_s, dl.retries, dl.backoff_s
        )
    # Write only once every dataset is verified, so a failure leaves no new output at all.
    for name, arrays in datasets.items():
        save_npz(args.out_dir / f"{name}.npz", arrays)


if __name__ == "__main__":
    run(main)
