"""Candidate settings for a target folder with few labels, each run through the pipeline's own stage scripts.

Usage: python research/few_labels.py --folder DIR [DIR ...] --weights mnist=W1 [fashion_mnist=W2] --out REPORT.json
       [--set key=value ...] [--candidate name key=value ... ]

For each candidate (a name and params overrides on top of params.yaml and --set) and each folder, in a temporary
folder: prepare, frozen_head, finetune and scratch as `dvc repro` runs them, from the pretrained weights of the
candidate's pretrain.source (a pipeline run's models/source.named.h5), then the frozen head's, the transfer and the
scratch models' accuracy on the folder's test/ images. Choose with folders whose test/ is a development set, never
the set you report on (research/handwritten.py makes both). The report has each candidate's overrides, its
accuracies per folder and their mean, and the stages' wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.bench import cpu_info  # noqa: E402

STAGES = [
    ("prepare", ["data/target.npz", "metrics/prepare.json"]),
    ("frozen_head", ["models/source.named.h5", "data/target.npz", "models/frozen_head.named.h5",
                     "metrics/transfer_report.json", "metrics/logs/frozen_head"]),
    ("finetune", ["models/frozen_head.named.h5", "data/target.npz", "models/finetune.named.h5",
                  "metrics/logs/finetune"]),
    ("scratch", ["data/target.npz", "models/scratch.named.h5", "metrics/logs/scratch"]),
]

SCORE = """
import json, sys
from tlpipe.core.model import build_model
from tlpipe.core.params import load_params
from tlpipe.core.train import evaluate
from tlpipe.core.target import load_target
from tlpipe.core.transfer import load_weights
params, target = load_params(), load_target("data/target.npz")
out = {}
for run, weights in (("transfer", "finetune"), ("frozen_head", "frozen_head"), ("scratch", "scratch")):
    model = build_model("target", params.model, params.base.image_size, len(target.classes))
    load_weights(model, f"models/{weights}.named.h5")
    out[run] = evaluate(model, target.x_test, target.y_test, 256)["test_accuracy"]
print(json.dumps(out))
"""


def set_key(params: dict, dotted: str, value: object) -> None:
    *parents, last = dotted.split(".")
    node = params
    for key in parents:
        node = node[key]
    if last not in node:
        raise SystemExit(f"error: unknown params key {dotted}")
    node[last] = value


def run_candidate(folder: Path, weights: dict[str, str], overrides: dict) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in (overrides | {"target.path": str(folder.resolve())}).items():
        set_key(params, key, value)
    env = os.environ | {"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "params.yaml").write_text(yaml.safe_dump(params))
        (work / "models").mkdir()
        (work / "models/source.named.h5").symlink_to(Path(weights[params["pretrain"]["source"]]).resolve())
        seconds = {}
        for stage, args in STAGES:
            started = time.perf_counter()
            result = subprocess.run([sys.executable, "-m", f"stages.{stage}", *args], cwd=work, env=env,
                                    capture_output=True, text=True)
            if result.returncode:
                raise SystemExit(f"{stage} failed:\n{result.stderr[-2000:]}")
            seconds[stage] = round(time.perf_counter() - started, 1)
        scored = subprocess.run([sys.executable, "-c", SCORE], cwd=work, env=env, capture_output=True, text=True)
        if scored.returncode:
            raise SystemExit(scored.stderr[-2000:])
        report = json.loads((work / "metrics/prepare.json").read_text())
    return {"accuracy": json.loads(scored.stdout.splitlines()[-1]), "images": report["total"],
            "stage_seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--folder", type=Path, nargs="+", required=True)
    parser.add_argument("--weights", nargs="+", required=True, metavar="SOURCE=WEIGHTS")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--set", nargs="*", default=[], help="key=value overrides for every candidate")
    parser.add_argument("--candidate", nargs="+", action="append", default=[], metavar="NAME [KEY=VALUE ...]")
    args = parser.parse_args()
    common = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    candidates = args.candidate or [["defaults"]]
    weights = dict(item.split("=", 1) for item in args.weights)
    results = {}
    for name, *items in candidates:
        overrides = common | {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in items)}
        runs = {folder.name: run_candidate(folder, weights, overrides) for folder in args.folder}
        mean = {run: round(sum(r["accuracy"][run] for r in runs.values()) / len(runs), 6)
                for run in ("transfer", "frozen_head", "scratch")}
        results[name] = {"overrides": overrides, "folders": runs, "mean": mean}
        print(name, json.dumps(mean), flush=True)
    out = {"folders": [folder.name for folder in args.folder], "machine": cpu_info()["model"],
           "date": time.strftime("%Y-%m-%d"), "candidates": results}
    args.out.write_text(json.dumps(out, indent=2, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
