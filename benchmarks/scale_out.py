"""Measure the sweep split over machines: every shard one after another here, then a collector clone.

    python benchmarks/scale_out.py --shards 3 --out benchmarks/scale_out.json

Needs the sweep's inputs (download, pretrain) up to date and committed in dvc.lock, and a DVC remote (the
repository's default one). Each shard runs `python -m tlpipe.shard i/n` in this repository, as a machine of its
own would (this machine's local cache holds no sweep point of another shard, so nothing is shared but the
remote); bytes pushed per point are what a machine that ran only that shard pushes (its records and run-cache
entries). The collector is a fresh `git clone` of HEAD that
runs `dvc repro --pull data_efficiency` (the run-cache, the inputs, the records), timed; it must train no point
and reach this repository's metrics/data_efficiency.json. From the measured numbers the JSON also estimates the
default sweep's wall time on N machines (README, "Scaling out").
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from tlpipe import shard as sharding  # noqa: E402
from tlpipe.bench import cpu_info  # noqa: E402


def remote_path(cwd: Path) -> Path:
    """The default DVC remote's folder (a local remote)."""
    name = subprocess.run(["dvc", "remote", "default"], cwd=cwd, capture_output=True, text=True).stdout.strip()
    listed = subprocess.run(["dvc", "remote", "list"], cwd=cwd, capture_output=True, text=True).stdout
    url = {line.split()[0]: line.split()[1] for line in listed.strip().splitlines()}[name]  # "name url (default)"
    return Path(url) if os.path.isabs(url) else (cwd / ".dvc" / url).resolve()


def pushed_bytes(root: Path, stages: list[str]) -> int:
    """What a machine that ran just `stages` pushes: their records (sizes from dvc.lock) and their run-cache
    entries (the files under .dvc/cache/runs whose cmd is one of theirs)."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    records = sum(out["size"] for stage in stages for out in lock[stage]["outs"])
    wanted = {stage.removeprefix("sweep@") for stage in stages}  # the seeds
    entries = 0
    for entry in (root / ".dvc/cache/runs").rglob("*"):
        if entry.is_file():
            found = re.search(r"--seed (\d+)", yaml.safe_load(entry.read_text()).get("cmd", ""))
            if found and found[1] in wanted:
                entries += entry.stat().st_size
    return records + entries


def shards_from_log(path: Path) -> list[dict]:
    """The shard summaries that `python -m tlpipe.shard` printed in an earlier run's log (its stages, what it
    trained or restored, its seconds); the split of those seconds into pull, repro and push is not in the log."""
    text = path.read_text()
    shards = []
    for shard, stages in re.findall(r"^shard (\d+/\d+): \d+ stages: (.*)$", text, re.M):
        done = re.search(rf"^shard {shard}: trained (\d+), restored (\d+) of \d+ stages in ([\d.]+) s", text, re.M)
        trained, restored = int(done[1]), int(done[2])
        stages = stages.split()
        shards.append({"shard": shard, "stages": stages, "trained": stages if trained == len(stages) else [],
                       "restored": stages if restored == len(stages) else [], "seconds": float(done[3]),
                       "pull_seconds": None, "repro_seconds": None, "push_seconds": None, "from_log": str(path.name)})
    return shards


def run(command: list[str], cwd: Path) -> tuple[str, float]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{' '.join(command)} failed in {cwd}:\n{result.stdout}\n{result.stderr}")
    return result.stdout, round(time.perf_counter() - started, 1)


def point_seconds(root: Path, stage: str) -> float:
    """The summed `seconds` of a sweep stage's records, a seed's points (training and test evaluation, no process
    start)."""
    seed = stage.removeprefix("sweep@")
    records = (root / "metrics/sweep" / f"seed-{seed}").glob("*.json")
    return sum(json.loads(path.read_text())["seconds"] for path in records)


def estimate(stages: list[str], own: dict[str, float], overhead: float, fixed: float, collector: float,
             machines: int) -> float:
    """Wall seconds of the whole sweep on `machines` machines: the slowest shard, then the collector."""
    shards = [sharding.shard_stages(stages, i, machines) for i in range(1, machines + 1)]
    return round(max(sum(own[s] + overhead for s in shard) for shard in shards) + fixed + collector, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rev", default="HEAD",
                        help="the commit the clones check out: the one the shards started from, whose dvc.lock does "
                             "not hold the sweep's results yet (as on machines that never saw them)")
    parser.add_argument("--shards-log", type=Path,
                        help="take the shards from an earlier run's log instead of running them (the run trained "
                             "them and pushed; e.g. its collector failed)")
    args = parser.parse_args()
    os.chdir(ROOT)
    remote = remote_path(ROOT)
    remote.mkdir(parents=True, exist_ok=True)
    run(["dvc", "push", "download", "pretrain"], ROOT)  # the first machine shares the sweep's inputs

    shards = shards_from_log(args.shards_log) if args.shards_log else []
    for index in range(1, args.shards + 1):
        if args.shards_log:
            break
        shards.append(sharding.main([f"{index}/{args.shards}"]))
        args.out.write_text(json.dumps({"shards": shards}, indent=2) + "\n")  # kept if a later step fails
    for summary in shards:
        points = sum(len(list((ROOT / "metrics/sweep" / f"seed-{stage.removeprefix('sweep@')}").glob("*.json")))
                     for stage in summary["stages"])  # a stage is a seed: its points at every budget
        pushed = pushed_bytes(ROOT, summary["stages"])
        summary |= {"points": points, "bytes_pushed": pushed, "bytes_per_point": round(pushed / points)}

    # shard 1 again, on a fresh clone whose points are all in the remote already: what a machine pays around the
    # training (clone excluded): pulling the inputs, restoring instead of training, pushing
    with tempfile.TemporaryDirectory(prefix="shard-") as tmp:
        clone = Path(tmp) / "shard"
        run(["git", "clone", "-q", str(ROOT), str(clone)], Path(tmp))
        run(["git", "checkout", "-q", args.rev], clone)
        run(["dvc", "remote", "add", "--local", "-f", "-d", "shared", str(remote)], clone)
        os.chdir(clone)  # this script's tlpipe.shard, run there (the stages it runs are the clone's own)
        try:
            again = sharding.main([f"1/{args.shards}"])
        finally:
            os.chdir(ROOT)

    _, aggregate_seconds = run(["dvc", "repro", "data_efficiency"], ROOT)  # this repository aggregates too
    with tempfile.TemporaryDirectory(prefix="collector-") as tmp:
        clone = Path(tmp) / "collector"
        run(["git", "clone", "-q", str(ROOT), str(clone)], Path(tmp))
        run(["git", "checkout", "-q", args.rev], clone)
        run(["dvc", "remote", "add", "--local", "-f", "-d", "shared", str(remote)], clone)
        started = time.perf_counter()
        steps = {}
        for name, command in (("repro --pull", ["dvc", "repro", "--pull", "data_efficiency"]),):
            out, steps[name] = run(command, clone)
        collector_seconds = round(time.perf_counter() - started, 1)
        trained = re.findall(r"^Running stage '(sweep@[^']+)'", out, re.M)
        restored = re.findall(r"^Stage '(sweep@[^']+)' is cached", out, re.M)
        ours = (ROOT / "metrics/data_efficiency.json").read_text()
        same = (clone / "metrics/data_efficiency.json").read_text() == ours
    all_stages = [s for summary in shards for s in summary["stages"]]
    if trained or sorted(restored) != sorted(all_stages) or not same:
        raise SystemExit(f"collector: trained {trained}, restored {len(restored)} of {len(all_stages)}, same={same}")

    names = sharding.dvc("stage", "list", "--name-only", show=False)[1].split()
    stages = [s for s in names if s.startswith(sharding.SWEEP_PREFIX)]
    own = {s: point_seconds(ROOT, s) for s in stages}
    if again["trained"] or sorted(again["restored"]) != sorted(again["stages"]):
        raise SystemExit(f"shard {again['shard']} on a fresh clone trained {again['trained']}")
    # per stage: process start, data loading, DVC (and, spread thinly, the shards' own pulls and pushes here)
    overhead = (sum(s["seconds"] for s in shards) - sum(own.values())) / len(stages)
    fixed = again["pull_seconds"] + again["push_seconds"]  # per machine: a fresh clone's pull and push
    report = {
        "machine": cpu_info()["model"], "date": time.strftime("%Y-%m-%d"),
        "commit": run(["git", "rev-parse", "--short", args.rev], ROOT)[0].strip(),
        "shards": shards,
        "shard_again_on_a_fresh_clone": again,
        "collector": {"seconds": collector_seconds, "steps": steps, "trained": len(trained), "restored": len(restored),
                      "same_data_efficiency_json": same},
        "aggregate_seconds_here": aggregate_seconds,
        "model": {"stage_overhead_seconds": round(overhead, 1), "shard_fixed_seconds": round(fixed, 1),
                  "point_seconds_total": round(sum(own.values()), 1)},
        "estimate_seconds": {str(n): estimate(stages, own, overhead, fixed, collector_seconds, n)
                             for n in (1, 2, 3, 5, 10, 15, 30) if n <= len(stages)},
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: report[k] for k in ("collector", "model", "estimate_seconds")}, indent=2))
    print(f"shards: {[(s['shard'], s['seconds'], math.ceil(s['bytes_per_point'])) for s in shards]}")


if __name__ == "__main__":
    main()
