"""Recipe search: train variants of the default params and record their *validation* numbers (never test).

    python research/recipes.py research/recipes.yaml --out results/recipes.json [--only NAME ...]

Each variant in the YAML file names the stages it runs (as dvc.yaml's commands, in a scratch copy of the
project with data/ linked in), its `dvc exp run -S`-style overrides, and optionally `reuse`: an earlier
variant whose models/ it starts from (so a fine-tuning variant need not pretrain again), or `workspace` for this
project's own models/. For every stage it
records the last epoch's validation accuracy and loss, the best validation accuracy, the training seconds and
seconds per epoch, from the stage's DVCLive logs, with the machine and the date. docs/recipe.md's table is
rendered from the JSON (`make docs`; `--render` prints it); results already in --out are kept unless re-run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` importable when run as a script
from benchmarks.bench import cpu_info, timed
from benchmarks.run import ROOT, copy_project, stage_env
from tlpipe.core.io import write_json
from tlpipe.core.live import read_curve, read_summary
from tools.doc_tables import render_recipes


def run_variant(variant: dict, work: Path, data: Path, env: dict, done: dict) -> dict:
    if work.exists():
        shutil.rmtree(work)
    copy_project(work, data, variant.get("set", []))
    if variant.get("reuse") == "workspace":  # this project's own models/ (e.g. the committed Fashion weights)
        if not (ROOT / "models").is_dir():
            raise SystemExit(f"variant {variant['name']}: reuse: workspace needs {ROOT / 'models'}; run `dvc repro`")
        shutil.copytree(ROOT / "models", work / "models")
    elif variant.get("reuse"):
        shutil.copytree(Path(done[variant["reuse"]]["workdir"]) / "models", work / "models")
    commands = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    out = {"set": variant.get("set", []), "reuse": variant.get("reuse"), "workdir": str(work), "stages": {},
           "machine": cpu_info()["model"], "date": time.strftime("%Y-%m-%d")}
    for stage in variant["stages"]:
        result = timed(shlex.split(commands[stage]["cmd"]), cwd=str(work), env=env)
        if result["returncode"]:
            raise SystemExit(f"variant {variant['name']}: stage {stage} failed (exit {result['returncode']})")
        logs = work / "metrics" / "logs" / stage
        curve = read_curve(logs)
        seconds = read_summary(logs)["train_seconds"]
        out["stages"][stage] = {
            "epochs": len(curve),
            "val_accuracy": round(curve[-1]["val_accuracy"], 4),
            "val_loss": round(curve[-1]["val_loss"], 4),
            "best_val_accuracy": round(max(r["val_accuracy"] for r in curve), 4),
            "curve": [round(r["val_accuracy"], 4) for r in curve],
            "train_seconds": seconds,
            "seconds_per_epoch": round(seconds / len(curve), 1),
            "process_seconds": result["seconds"],
        }
        print(f"{variant['name']} {stage}: {out['stages'][stage]}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("variants", type=Path, nargs="?", default=ROOT / "research" / "recipes.yaml")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "recipes.json")
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tlpipe-recipes"))
    parser.add_argument("--only", nargs="*", help="run just these variants")
    parser.add_argument("--render", action="store_true", help="print docs/recipe.md's table of --out and exit")
    args = parser.parse_args()
    results = json.loads(args.out.read_text()) if args.out.exists() else {}
    if args.render:
        print(render_recipes(results))
        return
    env = stage_env()
    for variant in yaml.safe_load(args.variants.read_text()):
        if args.only and variant["name"] not in args.only:
            continue
        results[variant["name"]] = {"what": variant.get("what", "")} | run_variant(
            variant, args.work / variant["name"], args.data, env, results)
        write_json(args.out, results)


if __name__ == "__main__":
    main()
