"""The frozen extractor's forward pass over MNIST's training images: the layers one by one against frozen_extractor.

    python benchmarks/extractor_speed.py --rounds 2 --batch-sizes 128 1024

The extractor is `models/fashion.named.h5`'s, transferred and frozen as `frozen_head` does it. Each round times
both ways at each batch size, alternated, after one warm-up call per batch shape (so tracing is not timed), and
prints seconds per pass and the largest difference from the layers' features. Prints only: the numbers quoted
in `benchmarks/profiles.md` are this script's output.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024])
    args = parser.parse_args()

    import tensorflow as tf

    from tlpipe.model import build_model, split_at_features
    from tlpipe.params import load_params
    from tlpipe.train import frozen_extractor, load_train_val, make_deterministic
    from tlpipe.transfer import set_trainable, transfer_by_name

    params = load_params(ROOT / "params.yaml")
    make_deterministic(params.base.seed, params.base.deterministic)
    images = load_train_val(ROOT / "data" / "mnist.npz", params.base).x_train
    images = images.reshape(len(images), params.base.image_size, params.base.image_size, 1)
    model = build_model("mnist", params.model, params.base.image_size)
    transfer_by_name(model, ROOT / "models" / "fashion.named.h5", params.transfer.layers)
    set_trainable(model, params.transfer.freeze, False, "transfer.freeze")
    extractor = split_at_features(model)[0]
    ways = {
        "layers": lambda: tf.function(lambda b: extractor(tf.cast(b, tf.float32), training=False),
                                      reduce_retracing=True),
        "folded": lambda: tf.function(frozen_extractor(extractor), reduce_retracing=True),
    }
    reference = None
    for round_ in range(1, args.rounds + 1):
        for batch in args.batch_sizes:
            for name, make in ways.items():
                run = make()
                run(images[:batch])
                if len(images) % batch:
                    run(images[-(len(images) % batch):])
                out = np.empty((len(images), *extractor.output.shape[1:]), np.float32)
                start = time.perf_counter()
                for i in range(0, len(images), batch):
                    out[i : i + batch] = run(images[i : i + batch]).numpy()
                seconds = time.perf_counter() - start
                if reference is None:
                    reference = out
                print(f"round {round_}  batch {batch:5d}  {name:6s}  {seconds:6.2f} s  {len(images)} images  "
                      f"max |difference| {np.abs(out - reference).max():.1e}", flush=True)


if __name__ == "__main__":
    main()
