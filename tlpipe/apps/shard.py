"""Run one machine's share of the label-budget sweep and push its results and run-cache to the DVC remote.

    python -m tlpipe.apps.shard 2/4          (or: make sweep-shard SHARD=2/4)

Shard i/n takes the sweep stages at positions i-1, i-1+n, i-1+2n, ... of `dvc stage list` (dvc.yaml's matrix
order: seed by seed; a stage is one seed's points at every budget): the n shards are disjoint, cover every
stage, and every machine on the same commit computes the same split, with no coordination. The steps, all DVC's
own commands:

1. `dvc pull` of the stages that the shard's stages depend on (download, prepare, pretrain): the sweep's inputs
   (data/target.npz, models/source.named.h5) as dvc.lock records them. Every machine must start from the same
   pretrained weights: a point's run-cache key includes the md5 of every dependency, so points made from other
   weights would never be found by the collector. An input that is not in the remote or not up to date with
   dvc.lock stops the shard before any training.
2. `dvc repro --pull --keep-going <stages>`: trains the shard's points; a point already in the remote's run-cache
   (another machine did it, or this shard ran before) is restored, not trained.
3. `dvc push --run-cache <stages>`: the points' records and their run-cache entries.

The DVC remote is the repository's default one (`dvc remote default`; `dvc remote add -d --local NAME URL` sets a
machine's own without a commit). The collecting machine then runs `dvc repro --pull data_efficiency`: every
point is restored from the run-cache (none is trained) and data_efficiency aggregates them (docs/scaling-out.md).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import time

from tlpipe.core.errors import PipelineError

SWEEP_PREFIX = "sweep@"


def parse_shard(text: str) -> tuple[int, int]:
    """'2/4' -> (2, 4); one line naming the problem otherwise."""
    found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not found or not 1 <= int(found[1]) <= int(found[2]):
        raise PipelineError(f"SHARD must be i/n with 1 <= i <= n (e.g. 2/4), got {text!r}")
    return int(found[1]), int(found[2])


def shard_stages(names: list[str], index: int, count: int) -> list[str]:
    """The sweep stages of shard `index` of `count` (1-based): every count-th one in `names`' order."""
    sweep = [name for name in names if name.startswith(SWEEP_PREFIX)]
    return sweep[index - 1 :: count]


def dvc(*args: str, show: bool = True, check: bool = True) -> tuple[int, str]:
    """Run a DVC command here; return its exit code and output (shown as it comes when `show`). A failure is a
    PipelineError naming the command and DVC's error line, unless not `check`."""
    command = ["dvc", *args]
    if show:
        print("$ " + " ".join(command), flush=True)
        proc = subprocess.Popen(command, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        lines = []
        for line in proc.stdout:
            lines.append(line)
            print(line, end="", flush=True)
        output, errors = "".join(lines), ""
        proc.wait()
    else:
        proc = subprocess.Popen(command, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        output, errors = proc.communicate()
    if proc.returncode and check:
        raise PipelineError(f"`{' '.join(command)}` failed (exit {proc.returncode}){error_line(errors + output)}")
    return proc.returncode, output


def error_line(output: str) -> str:
    """': <DVC's ERROR line>' from a command's output ('' when there is none)."""
    found = [line.strip() for line in output.splitlines() if line.startswith("ERROR")]
    return f": {found[0]}" if found else ""


def upstream(stages: list[str]) -> list[str]:
    """The stages that `stages` depend on, directly or not (for the sweep: download, prepare and pretrain)."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo() as repo:
        graph = repo.index.graph  # edges run from a stage to the stages it depends on
        nodes = [stage for stage in graph if stage.addressing in stages]
        found = set().union(*(nx.descendants(graph, node) for node in nodes))
    return sorted(stage.addressing for stage in found if stage.addressing not in stages)


def stale_inputs(stages: list[str]) -> list[str]:
    """Those of `stages` that are not up to date with dvc.lock here (e.g. missing outputs, other params)."""
    status = json.loads(dvc("status", "--json", *stages, show=False)[1] or "{}")
    return sorted(status)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shard", help="i/n: this machine's share, 1 <= i <= n")
    parser.add_argument("--list", action="store_true", help="print the shard's stages and stop")
    args = parser.parse_args(argv)
    index, count = parse_shard(args.shard)
    names = dvc("stage", "list", "--name-only", show=False)[1].split()
    stages = shard_stages(names, index, count)
    if not stages:
        raise PipelineError(f"shard {index}/{count} has no sweep stage (dvc.yaml has "
                            f"{len(shard_stages(names, 1, 1))}); use fewer shards")
    print(f"shard {index}/{count}: {len(stages)} stages: {' '.join(stages)}", flush=True)
    if args.list:
        return {"stages": stages}
    clock = [time.perf_counter()]

    def lap() -> float:
        clock.append(time.perf_counter())
        return round(clock[-1] - clock[-2], 1)

    inputs = upstream(stages)
    dvc("pull", "--allow-missing", *inputs)
    stale = stale_inputs(inputs)
    if stale:
        raise PipelineError(
            f"{', '.join(stale)}: not up to date with dvc.lock here, so this machine's points would not match the "
            "others'; on one machine run `dvc repro prepare pretrain`, `dvc push`, and commit and push dvc.lock, "
            "then pull that commit on every shard"
        )
    pull_seconds = lap()
    # --keep-going: a failing stage does not stop the others, and what was trained is pushed all the same
    code, repro = dvc("repro", "--pull", "--keep-going", *stages, check=False)
    repro_seconds = lap()
    trained = re.findall(r"^Running stage '(sweep@[^']+)'", repro, re.M)
    restored = re.findall(r"^Stage '(sweep@[^']+)' is cached", repro, re.M)
    dvc("push", "--run-cache", *stages, check=not code)
    if code:
        raise PipelineError(f"`dvc repro` failed for some of shard {index}/{count}'s stages (the others were "
                            f"pushed){error_line(repro)}")
    summary = {"shard": f"{index}/{count}", "stages": stages, "trained": trained, "restored": restored,
               "pull_seconds": pull_seconds, "repro_seconds": repro_seconds, "push_seconds": lap(),
               "seconds": round(clock[-1] - clock[0], 1)}
    print(f"shard {index}/{count}: trained {len(trained)}, restored {len(restored)} of {len(stages)} stages "
          f"in {summary['seconds']} s (pull {pull_seconds} s, repro {repro_seconds} s, push "
          f"{summary['push_seconds']} s); pushed to the DVC remote", flush=True)
    return summary


if __name__ == "__main__":
    from tlpipe.core.cli import run

    run(main)
