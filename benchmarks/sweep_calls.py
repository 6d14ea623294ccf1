"""Seconds and memory of each training call and test pass of sweep points, in one process, in the order they run.

    python benchmarks/sweep_calls.py --budgets 100 --seed 0 --runs transfer frozen scratch scratch

Runs `tlpipe.points.run_points` as `sweep@<seed>` does, on the budgets given (a run may be listed twice: its
second time shows what a call costs once the stage's functions are traced) and prints, per call, the model trained
(`mnist_cnn` the whole model, `head` the head on the cached features), its steps and its wall seconds, then each
test pass, with the process's RSS after the call and its peak during it (sampled every 10 ms, so a short
spike can be missed; `/usr/bin/time -v` gives the exact peak of a whole stage). Prints only: the numbers
quoted in `benchmarks/profiles.md` are this script's output.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import tlpipe.points as points  # noqa: E402
from tlpipe.bench import rss_mb  # noqa: E402
from tlpipe.data import load_npz  # noqa: E402
from tlpipe.params import SWEEP_RUNS, load_params  # noqa: E402


class Peak(threading.Thread):
    """The largest RSS seen (sampled every 10 ms) since the last `take`."""

    def __init__(self):
        super().__init__(daemon=True)
        self.lock = threading.Lock()
        self.peak = rss_mb()

    def run(self) -> None:
        while True:
            with self.lock:
                self.peak = max(self.peak, rss_mb())
            time.sleep(0.01)

    def take(self) -> int:
        with self.lock:
            now = rss_mb()
            peak, self.peak = max(self.peak, now), now
        return peak


PEAK = Peak()


def timed(name: str, function):
    def wrapper(*args, **kwargs):
        started = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            print(f"{name(*args):<26} {time.perf_counter() - started:6.2f} s  RSS {rss_mb():5d} MB, "
                  f"peak {PEAK.take():5d} MB", flush=True)

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budgets", type=int, nargs="+", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--runs", nargs="+", choices=SWEEP_RUNS, default=list(SWEEP_RUNS))
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "mnist.npz")
    parser.add_argument("--weights", type=Path, default=ROOT / "models" / "fashion.named.h5")
    args = parser.parse_args()
    points.Trainer.train = timed(lambda trainer, data, steps, *_: f"train {trainer.model.name} {steps} steps",
                                 points.Trainer.train)
    points.evaluate = timed(lambda *_: "test pass", points.evaluate)
    PEAK.start()
    print(f"{'start':<26} {'':8}  RSS {rss_mb():5d} MB", flush=True)
    started = time.perf_counter()
    points.run_points(args.runs, args.budgets, args.seed, load_params(), load_npz(args.data), args.weights)
    print(f"{'run_points':<26} {time.perf_counter() - started:6.2f} s")


if __name__ == "__main__":
    main()
