"""Side-by-side cost of sweep points under two versions of the project (e.g. the last commit and the work tree).

    python benchmarks/sweep_cost.py --old /tmp/old --new . --points 100-0 1000-0 60000-0 --rounds 2 \
        --out benchmarks/sweep_cost.json

Each version is a project folder with dvc.yaml, params.yaml, stages/ and tlpipe/. For every round and seed,
the old version's sweep command(s) for that seed's points run, then the new one's (alternated, so a slow spell
of the machine hits both), each in a scratch copy with data/ and the Fashion weights linked in, timed from
process start to exit. A version whose stage is one (budget, seed) (`${item.budget}` in its command) runs once
per point; one whose stage is a seed runs once per seed, given the points' budgets (`--budgets`). Reports the
seconds of each (round, side, seed) and its largest process's peak RSS (MB), seconds per point, the new/old
ratio, and each side's largest peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.run import copy_project, stage_env  # noqa: E402
from tlpipe.bench import timed  # noqa: E402


def prepare(project: Path, work: Path, data: Path, weights: Path) -> list[str] | str:
    copy_project(work, data, [], root=project)
    template = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]["sweep"]["cmd"]
    # link the weights where this version's command reads them (older versions used another file name)
    words = shlex.split(" ".join(template) if isinstance(template, list) else template)
    (work / "models").mkdir()
    os.symlink(weights.resolve(), work / words[words.index("--source-weights") + 1])
    return template


def commands(template: list[str] | str, budgets: list[int], seed: int) -> list[list[str]]:
    """The commands that compute `budgets` x `seed` under a version's stage command (see the module's doc)."""
    cmds = template if isinstance(template, list) else [template]
    per_point = any("${item.budget}" in c for c in cmds)
    out = []
    for budget in budgets if per_point else [None]:
        for c in cmds:
            words = shlex.split(c.replace("${item.budget}", str(budget)).replace("${item.seed}", str(seed)))
            out.append(words if per_point else [*words, "--budgets", *map(str, budgets)])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True)
    parser.add_argument("--new", type=Path, required=True)
    parser.add_argument("--points", nargs="+", required=True, metavar="BUDGET-SEED")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--weights", type=Path, default=ROOT / "models" / "fashion.named.h5")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    env = stage_env(None)
    points = [tuple(int(v) for v in p.split("-")) for p in args.points]
    seeds: dict[int, list[int]] = {}  # seed -> its budgets, in the order given
    for budget, seed in points:
        seeds.setdefault(seed, []).append(budget)
    runs = []
    with tempfile.TemporaryDirectory(prefix="tlpipe-sweep-cost-") as tmp:
        works = {side: Path(tmp) / side for side in ("old", "new")}
        templates = {}
        for side, project in (("old", args.old), ("new", args.new)):
            templates[side] = prepare(project, works[side], args.data, args.weights)
        for round_ in range(args.rounds):
            for seed in seeds:
                for side in ("old", "new"):
                    env_side = env | {"PYTHONPATH": str(works[side])}
                    seconds, peak, cmds = 0.0, 0, commands(templates[side], seeds[seed], seed)
                    for cmd in cmds:
                        result = timed(cmd, cwd=str(works[side]), env=env_side)
                        if result["returncode"]:
                            raise SystemExit(f"{side} seed {seed} failed: {shlex.join(cmd)}")
                        seconds += result["seconds"]
                        peak = max(peak, result["peak_rss_mb"])
                    runs.append({"round": round_, "side": side, "seed": seed, "budgets": seeds[seed],
                                 "processes": len(cmds), "seconds": round(seconds, 2), "peak_rss_mb": peak})
                    print(runs[-1], flush=True)
    total = {side: sum(r["seconds"] for r in runs if r["side"] == side) for side in ("old", "new")}
    report = {"command": " ".join(["python", "benchmarks/sweep_cost.py", *sys.argv[1:]]), "runs": runs,
              "total_seconds": {k: round(v, 1) for k, v in total.items()},
              "seconds_per_point": {k: round(v / (3 * len(points) * args.rounds), 2) for k, v in total.items()},
              "new_over_old": round(total["new"] / total["old"], 3),
              "peak_rss_mb": {side: max(r["peak_rss_mb"] for r in runs if r["side"] == side)
                              for side in ("old", "new")}}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("total_seconds", "seconds_per_point", "new_over_old", "peak_rss_mb")}))


if __name__ == "__main__":
    main()
