"""Sweep points under changed params, for choosing a sweep setting on the *validation* splits.

    python benchmarks/sweep_variant.py --set sweep.bn_momentum=0.99 --points 100-0 1000-0 10000-0 \
        --baseline metrics/sweep --out benchmarks/sweep_bn_momentum.json

Runs `stages/sweep_point.py` for each BUDGET-SEED in a scratch copy of the project with the overrides applied
(data/ and models/fashion.named.h5 linked in), and puts each point's validation accuracy (of the checkpoint
its validation split selected) beside the baseline's record of the same point, e.g. the committed
metrics/sweep/ of the default params. Test accuracies are kept in the records but never compared here.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.run import copy_project, stage_env  # noqa: E402
from tlpipe.bench import timed  # noqa: E402
from tlpipe.params import SWEEP_RUNS  # noqa: E402
from tlpipe.sweep import point_path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", required=True)
    parser.add_argument("--points", nargs="+", required=True, metavar="BUDGET-SEED")
    parser.add_argument("--baseline", type=Path, default=ROOT / "metrics" / "sweep")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    env = stage_env(None)
    rows = []
    with tempfile.TemporaryDirectory(prefix="tlpipe-sweep-variant-") as tmp:
        work = Path(tmp)
        copy_project(work, ROOT / "data", args.set)
        (work / "models").mkdir()
        os.symlink((ROOT / "models" / "fashion.named.h5").resolve(), work / "models" / "fashion.named.h5")
        for point in args.points:
            budget, seed = point.split("-")
            cmd = [sys.executable, "stages/sweep_point.py", "--budgets", budget, "--seed", seed,
                   "--data", "data/mnist.npz", "--source-weights", "models/fashion.named.h5", "--out-dir", "points"]
            if timed(cmd, cwd=str(work), env=env | {"PYTHONPATH": str(work)})["returncode"]:
                raise SystemExit(f"point {point} failed")
            for run in SWEEP_RUNS:
                name = f"{run}-{budget}-{seed}.json"
                variant = json.loads((work / "points" / name).read_text())
                base = json.loads(point_path(args.baseline, run, int(budget), int(seed)).read_text())
                rows.append({"run": run, "budget": int(budget), "seed": int(seed),
                             "baseline_val_accuracy": base["selected"]["val_accuracy"],
                             "variant_val_accuracy": variant["selected"]["val_accuracy"], "variant_record": variant})
                print({k: v for k, v in rows[-1].items() if k != "variant_record"}, flush=True)
    means = {side: {run: round(sum(r[f"{side}_val_accuracy"] for r in rows if r["run"] == run)
                               / sum(r["run"] == run for r in rows), 4) for run in SWEEP_RUNS}
             for side in ("baseline", "variant")}
    report = {"command": " ".join(["python", "benchmarks/sweep_variant.py", *sys.argv[1:]]), "set": args.set,
              "mean_val_accuracy": means, "points": rows}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(means))


if __name__ == "__main__":
    main()
