"""Benchmark: the seed-faithful reference against the project's stages, in one run on this machine.

    make bench            (= python benchmarks/run.py --out results/report.json)

Needs data/*.npz (run `dvc repro download` first). Both sides run in a scratch folder, one process per
phase, timed from process start to exit (imports and data loading included) with peak RSS from wait4.
The two sides are interleaved phase by phase (`schedule`): reference pretrain, project pretrain, reference
frozen, project frozen_head, and so on, then the project's `compare` (timed, not counted in the totals), so
that a slow spell of the machine hits both sides rather than one. The project's stages run exactly as
dvc.yaml's `cmd`s, with the repository's params.yaml (epochs per stage from it, `--set` overrides applied to
the copy). Then a no-op `dvc repro` is timed in the repository itself (only if `dvc status` is clean). Writes
a JSON report (with the machine and the date) and prints the tables of docs/performance.md (`make docs` renders
them there). Takes about as long as two full pipelines.

    python benchmarks/run.py --render results/report.json   (the tables of a report; runs nothing)
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # `benchmarks` importable when run as a script
from benchmarks.bench import cpu_info, matmul_gflops, timed, training_flops
from tlpipe.core.data import load_npz
from tlpipe.core.io import write_json
from tlpipe.core.model import build_model
from tlpipe.core.params import load_params
from tools.doc_tables import PHASES, render_performance, render_targets

ROOT = Path(__file__).resolve().parents[1]
FULL_MODEL = ("pretrain", "finetune", "scratch")  # phases that train the whole model
PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "tlpipe"]


def stage_env(pythonpath: Path | None = ROOT) -> dict[str, str]:
    """The environment for a stage's command: dvc.yaml's `python` and `dvc` are this interpreter's (the venv's),
    as under `make`, however the script was started; `pythonpath` (unless None) is the tlpipe it imports."""
    env = os.environ | {"TF_CPP_MIN_LOG_LEVEL": "2",
                        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    return env | {"PYTHONPATH": str(pythonpath)} if pythonpath else env


def schedule(reuse_reference: bool) -> list[tuple[str, str]]:
    """The timed processes in order, as (side, phase or stage), interleaved as the module docstring says; with a
    reused reference only the project's stages run."""
    steps = []
    for phase, stage in PHASES.items():
        if not reuse_reference:
            steps.append(("reference", phase))
        steps.append(("project", stage))
    return [*steps, ("project", "compare")]


def apply_overrides(params_file: Path, overrides: list[str]) -> None:
    """`dvc exp run -S`-style KEY=VALUE overrides (VALUE parsed as YAML) on a copy of params.yaml."""
    params = yaml.safe_load(params_file.read_text())
    for item in overrides:
        key, sep, value = item.partition("=")
        *parents, leaf = key.split(".")
        node = params
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if not sep or not isinstance(node, dict) or leaf not in node:
            raise SystemExit(f"--set {item}: expected KEY=VALUE with KEY in params.yaml")
        node[leaf] = yaml.safe_load(value)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))


def copy_project(work: Path, data: Path, overrides: list[str], root: Path = ROOT) -> None:
    """Copy the project at `root` into `work` (made if missing), apply the overrides, link data/*.npz in."""
    work.mkdir(parents=True, exist_ok=True)
    for name in PROJECT_FILES:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, work / name)
    apply_overrides(work / "params.yaml", overrides)
    (work / "data").mkdir()
    for npz in ("mnist.npz", "fashion_mnist.npz"):
        os.symlink(data.resolve() / npz, work / "data" / npz)


def prepare_project(work: Path, data: Path, overrides: list[str]) -> dict[str, list[str]]:
    """Copy the project into `work` with the overrides applied and data/ linked in; return its stages' argv."""
    copy_project(work, data, overrides)
    stages = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    return {stage: shlex.split(stages[stage]["cmd"]) for stage in [*PHASES.values(), "compare"]}


def run_interleaved(ref_work: Path, proj_work: Path, data: Path, env: dict, overrides: list[str],
                    reference: dict | None = None) -> tuple[dict, dict, list[str]]:
    """Run `schedule`'s processes; return the reference's phases (`reference` itself when given: reused from
    an earlier report, nothing re-run), the project's stages and the order they ran in."""
    commands = prepare_project(proj_work, data, overrides)
    params = load_params(proj_work / "params.yaml")
    epochs = {stage: getattr(params, stage).epochs for stage in PHASES.values()}
    n_train = {npz: len(load_npz(data / npz)["y_train"]) - params.base.val_size
               for npz in ("fashion_mnist.npz", "mnist.npz")}
    ref_out = {} if reference is None else reference
    proj_out, order = {}, []
    for side, name in schedule(reuse_reference=reference is not None):
        if side == "reference":
            command = [sys.executable, str(ROOT / "benchmarks" / "reference.py"), "--phase", name,
                       "--data", str(data), "--workdir", str(ref_work)]
            result = timed(command, cwd=str(ROOT), env=env)
            if result["returncode"]:
                raise SystemExit(f"reference phase {name} failed (exit {result['returncode']})")
            ref_out[name] = result | json.loads((ref_work / f"{name}.json").read_text())
        else:
            result = timed(commands[name], cwd=str(proj_work), env=env)
            if result["returncode"]:
                raise SystemExit(f"project stage {name} failed (exit {result['returncode']})")
            if name != "compare":
                result["epochs"] = epochs[name]
                result["train_images"] = epochs[name] * n_train["fashion_mnist.npz" if name == "pretrain"
                                                                else "mnist.npz"]
            proj_out[name] = result
        order.append(f"{side} {name}")
        print(f"bench: {side} {name}: {result['seconds']:.1f} s", file=sys.stderr, flush=True)
    metrics = json.loads((proj_work / "metrics" / "compare.json").read_text())
    accuracy = {"pretrain": metrics["pretrain"], "frozen_head": metrics["frozen_head"],
                "finetune": metrics["transfer"], "scratch": metrics["scratch"]}
    for stage, m in accuracy.items():
        proj_out[stage]["test_accuracy"] = m["test_accuracy"]
    return ref_out, proj_out, order


def noop_repro_seconds(env: dict) -> float | None:
    # the main pipeline's: `dvc status` alone would also list the study's stages (study/dvc.yaml)
    status = subprocess.run(["dvc", "status", "--quiet", "dvc.yaml"], cwd=ROOT, env=env, capture_output=True)
    if status.returncode != 0:
        print("dvc status is not clean: no-op repro not measured", file=sys.stderr)
        return None
    return min(timed(["dvc", "repro", "--quiet"], cwd=str(ROOT), env=env)["seconds"] for _ in range(3))


def summarize(reference: dict, project: dict, gflops: float, flops: dict, noop: float | None, argv: list,
              order: list[str] | None = None, reference_reused: bool = False) -> dict:
    def rate(side: dict, names) -> float:
        return sum(side[n]["train_images"] for n in names) / sum(side[n]["seconds"] for n in names)

    def achieved(side: dict, names) -> float:
        """GFLOP/s of full-model training: pretrain trains the Fashion model, the others the MNIST one."""
        work = sum(side[n]["train_images"] * flops["fashion_train" if n == "pretrain" else "mnist_train"]
                   for n in names)
        return work / sum(side[n]["seconds"] for n in names) / 1e9

    ref_total = sum(reference[p]["seconds"] for p in PHASES)
    proj_total = sum(project[s]["seconds"] for s in PHASES.values())
    ref_rate = rate(reference, FULL_MODEL)
    proj_rate = rate(project, [PHASES[p] for p in FULL_MODEL])
    per_phase = {p: round(reference[p]["seconds"] / project[s]["seconds"], 2) for p, s in PHASES.items()}
    for r in [*(reference[p] for p in PHASES), *(project[s] for s in PHASES.values())]:
        r["images_per_second"] = round(r["train_images"] / r["seconds"], 1)
    return {
        "command": " ".join(argv),
        "machine": cpu_info(),
        "date": time.strftime("%Y-%m-%d"),
        "order": order,
        "reference_reused": reference_reused,
        "matmul_gflops": round(gflops, 1),
        "flops_per_trained_image": {k: round(v / 1e6, 2) for k, v in flops.items()} | {"unit": "MFLOP"},
        "reference": {"phases": reference, "total_seconds": round(ref_total, 1),
                      "full_model_images_per_second": round(ref_rate, 1)},
        "project": {"stages": project, "total_seconds": round(proj_total, 1),
                    "full_model_images_per_second": round(proj_rate, 1)},
        # reference seconds / project seconds, per phase and in total
        "speedup": {"total": round(ref_total / proj_total, 2), "frozen_head": per_phase["frozen"],
                    "per_phase": per_phase, "train_images_per_second": round(proj_rate / ref_rate, 2)},
        "time_ratio_total": round(proj_total / ref_total, 3),  # project seconds / reference seconds
        "train_fraction_of_peak": round(achieved(project, [PHASES[p] for p in FULL_MODEL]) / gflops, 3),
        "reference_train_fraction_of_peak": round(achieved(reference, FULL_MODEL) / gflops, 3),
        "noop_repro_seconds": noop,
        "peak_rss_mb": max(project[s]["peak_rss_mb"] for s in project),
        "test_accuracy": {"reference": {p: reference[p]["test_accuracy"] for p in PHASES},
                          "project": {s: project[s]["test_accuracy"] for s in PHASES.values()}},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "report.json")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param for the project side only (repeatable), like `dvc exp run -S`")
    parser.add_argument("--reuse-reference", type=Path, metavar="REPORT",
                        help="take the reference's phases from an earlier report instead of re-running them")
    parser.add_argument("--render", type=Path, metavar="REPORT",
                        help="print docs/performance.md's tables of an existing report and exit (runs nothing)")
    parser.add_argument("--measure-noop", type=Path, metavar="REPORT",
                        help="time the no-op `dvc repro` again (the pipeline must be up to date) into REPORT")
    args = parser.parse_args()
    if args.render:
        report = json.loads(args.render.read_text())
        print(render_performance(report), render_targets(report), sep="\n\n")
        return
    if args.measure_noop:
        env = stage_env(None)
        report = json.loads(args.measure_noop.read_text())
        report["noop_repro_seconds"] = noop_repro_seconds(env)
        if report["noop_repro_seconds"] is None:
            raise SystemExit("dvc status is not clean: run `dvc repro` first")
        report["noop_command"] = " ".join(["python", "benchmarks/run.py", *sys.argv[1:]])
        write_json(args.measure_noop, report)
        print(render_targets(report))
        return
    for npz in ("mnist.npz", "fashion_mnist.npz"):
        if not (args.data / npz).is_file():
            raise SystemExit(f"{args.data / npz}: missing; run `dvc repro download` first")
    env = stage_env()
    params = load_params(ROOT / "params.yaml")
    flops = {f"{phase}_{k}": v for phase, role in (("fashion", "source"), ("mnist", "target"))
             for k, v in training_flops(build_model(role, params.model, params.base.image_size)).items()}
    gflops = matmul_gflops()
    reference = json.loads(args.reuse_reference.read_text())["reference"]["phases"] if args.reuse_reference else None
    with tempfile.TemporaryDirectory(prefix="tlpipe-bench-") as tmp:
        (Path(tmp) / "ref").mkdir()
        (Path(tmp) / "project").mkdir()
        reference, project, order = run_interleaved(Path(tmp) / "ref", Path(tmp) / "project", args.data, env,
                                                    args.set, reference)
    noop = noop_repro_seconds(env)
    report = summarize(reference, project, gflops, flops, noop, ["python", "benchmarks/run.py", *sys.argv[1:]],
                       order=order, reference_reused=args.reuse_reference is not None)
    write_json(args.out, report)
    print(render_performance(report), render_targets(report), sep="\n\n")
    print(json.dumps({k: report[k] for k in ("speedup", "time_ratio_total", "noop_repro_seconds", "peak_rss_mb",
                                              "matmul_gflops", "train_fraction_of_peak")}, indent=2))


if __name__ == "__main__":
    main()
