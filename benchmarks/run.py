"""Benchmark: the seed-faithful reference against the project's stages, in one run on this machine.

    make bench            (= python benchmarks/run.py --out benchmarks/report.json)

Needs data/*.npz (run `dvc repro download` first). Both sides run in a scratch folder, one process per
phase, timed from process start to exit (imports and data loading included) with peak RSS from wait4.
The project's stages run exactly as dvc.yaml's `cmd`s, with the repository's params.yaml. Then a no-op
`dvc repro` is timed in the repository itself (only if `dvc status` is clean). Writes a JSON report and
prints the tables of the README's "Performance" section. Takes about as long as two full pipelines.

    python benchmarks/run.py --render benchmarks/report.json   (the tables of a report; runs nothing)
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
from pathlib import Path

import yaml

from tlpipe.bench import cpu_info, matmul_gflops, timed, training_flops
from tlpipe.data import load_npz
from tlpipe.io import write_json
from tlpipe.model import build_model
from tlpipe.params import load_params

ROOT = Path(__file__).resolve().parents[1]
# reference phase -> project stage that does the same job
PHASES = {"pretrain": "pretrain", "frozen": "frozen_head", "finetune": "finetune", "scratch": "scratch"}
FULL_MODEL = ("pretrain", "finetune", "scratch")  # phases that train the whole model
PROJECT_FILES = ["dvc.yaml", "params.yaml", "stages", "tlpipe"]


def run_reference(work: Path, data: Path, env: dict) -> dict:
    out = {}
    for phase in PHASES:
        cmd = [sys.executable, str(ROOT / "benchmarks" / "reference.py"), "--phase", phase,
               "--data", str(data), "--workdir", str(work)]
        result = timed(cmd, cwd=str(ROOT), env=env)
        if result["returncode"]:
            raise SystemExit(f"reference phase {phase} failed (exit {result['returncode']})")
        out[phase] = result | json.loads((work / f"{phase}.json").read_text())
    return out


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


def run_project(work: Path, data: Path, env: dict, overrides: list[str]) -> dict:
    for name in PROJECT_FILES:
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, work / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(src, work / name)
    apply_overrides(work / "params.yaml", overrides)
    (work / "data").mkdir()
    for npz in ("mnist.npz", "fashion_mnist.npz"):
        os.symlink(data.resolve() / npz, work / "data" / npz)
    stages = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    params = load_params(work / "params.yaml")
    n_train = {stage: len(load_npz(data / ("fashion_mnist.npz" if stage == "pretrain" else "mnist.npz"))["y_train"])
               - params.base.val_size for stage in PHASES.values()}
    epochs = {"pretrain": params.pretrain.epochs, "frozen_head": params.frozen_head.epochs,
              "finetune": params.finetune.epochs, "scratch": params.scratch.epochs}
    out = {}
    for stage in [*PHASES.values(), "compare"]:
        result = timed(shlex.split(stages[stage]["cmd"]), cwd=str(work), env=env)
        if result["returncode"]:
            raise SystemExit(f"project stage {stage} failed (exit {result['returncode']})")
        if stage != "compare":
            result["train_images"] = epochs[stage] * n_train[stage]
        out[stage] = result
    metrics = json.loads((work / "metrics" / "compare.json").read_text())
    accuracy = {"pretrain": metrics["pretrain"], "frozen_head": metrics["frozen_head"],
                "finetune": metrics["transfer"], "scratch": metrics["scratch"]}
    for stage, m in accuracy.items():
        out[stage]["test_accuracy"] = m["test_accuracy"]
    return out


def noop_repro_seconds(env: dict) -> float | None:
    status = subprocess.run(["dvc", "status", "--quiet"], cwd=ROOT, env=env, capture_output=True)
    if status.returncode != 0:
        print("dvc status is not clean: no-op repro not measured", file=sys.stderr)
        return None
    best = min(timed(["dvc", "repro", "--quiet"], cwd=str(ROOT), env=env)["seconds"] for _ in range(3))
    return best


def summarize(reference: dict, project: dict, gflops: float, flops: dict, noop: float | None, argv: list) -> dict:
    def rate(side: dict, names) -> float:
        return sum(side[n]["train_images"] for n in names) / sum(side[n]["seconds"] for n in names)

    def achieved(side: dict, names) -> float:
        """GFLOP/s of full-model training: pretrain trains the Fashion model, the others the MNIST one."""
        work = sum(side[n]["train_images"] * flops["fashion_train" if n == "pretrain" else "mnist_train"]
                   for n in names)
        return work / sum(side[n]["seconds"] for n in names) / 1e9

    ref_total = sum(r["seconds"] for r in reference.values())
    proj_total = sum(project[s]["seconds"] for s in PHASES.values())
    ref_rate = rate(reference, FULL_MODEL)
    proj_rate = rate(project, [PHASES[p] for p in FULL_MODEL])
    per_phase = {p: round(reference[p]["seconds"] / project[s]["seconds"], 2) for p, s in PHASES.items()}
    for r in [*reference.values(), *(project[s] for s in PHASES.values())]:
        r["images_per_second"] = round(r["train_images"] / r["seconds"], 1)
    return {
        "command": " ".join(argv),
        "machine": cpu_info(),
        "matmul_gflops": round(gflops, 1),
        "flops_per_trained_image": {k: round(v / 1e6, 2) for k, v in flops.items()} | {"unit": "MFLOP"},
        "reference": {"phases": reference, "total_seconds": round(ref_total, 1),
                      "full_model_images_per_second": round(ref_rate, 1)},
        "project": {"stages": project, "total_seconds": round(proj_total, 1),
                    "full_model_images_per_second": round(proj_rate, 1)},
        "speedup": {"total": round(ref_total / proj_total, 2), "frozen_head": per_phase["frozen"],
                    "per_phase": per_phase, "train_images_per_second": round(proj_rate / ref_rate, 2)},
        "train_fraction_of_peak": round(achieved(project, [PHASES[p] for p in FULL_MODEL]) / gflops, 3),
        "reference_train_fraction_of_peak": round(achieved(reference, FULL_MODEL) / gflops, 3),
        "noop_repro_seconds": noop,
        "peak_rss_mb": max(project[s]["peak_rss_mb"] for s in project),
        "test_accuracy": {"reference": {p: reference[p]["test_accuracy"] for p in PHASES},
                          "project": {s: project[s]["test_accuracy"] for s in PHASES.values()}},
    }


def table(report: dict) -> str:
    ref, proj = report["reference"]["phases"], report["project"]["stages"]
    lines = ["| phase | reference s | project s | speedup | reference img/s | project img/s "
             "| reference test acc | project test acc | project peak RSS MB |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for phase, stage in PHASES.items():
        r, p = ref[phase], proj[stage]
        lines.append(f"| {stage} | {r['seconds']:.1f} | {p['seconds']:.1f} | {r['seconds'] / p['seconds']:.2f}x "
                     f"| {r['images_per_second']:.0f} | {p['images_per_second']:.0f} | {r['test_accuracy']:.4f} "
                     f"| {p['test_accuracy']:.4f} | {p['peak_rss_mb']} |")
    lines.append(f"| **total** | {report['reference']['total_seconds']:.1f} | {report['project']['total_seconds']:.1f} "
                 f"| {report['speedup']['total']:.2f}x | | | | | {report['peak_rss_mb']} |")
    return "\n".join(lines)


# Issue 3's targets and the pipeline issue's accuracy bars (test set, default params). Targets, not results.
BARS = {"pretrain": 0.91, "finetune": 0.993, "scratch": 0.990}
TARGETS = {"total": 2.0, "frozen_head": 10.0, "train_images_per_second": 1.8, "noop_repro_seconds": 3.0,
           "peak_rss_mb": 3000}


def targets(report: dict) -> str:
    """The issue's targets against this report, as a Markdown table (copied into the README)."""
    speedup, accuracy, rss = report["speedup"], report["test_accuracy"]["project"], report["peak_rss_mb"]
    missed = [f"{stage} {accuracy[stage]:.4f} < {bar}" for stage, bar in BARS.items() if accuracy[stage] < bar]
    noop = report["noop_repro_seconds"]
    rows = [
        ("total training time ≤ 0.5× the reference, every accuracy bar met",
         f"{1 / speedup['total']:.2f}× the reference" + (f"; bars missed: {', '.join(missed)}" if missed else ""),
         speedup["total"] >= TARGETS["total"] and not missed),
        ("`frozen_head` ≥ 10× faster than the reference's frozen phase", f"{speedup['frozen_head']:.2f}× faster",
         speedup["frozen_head"] >= TARGETS["frozen_head"]),
        ("full-model training ≥ 1.8× the reference's images/s",
         f"{speedup['train_images_per_second']:.2f}×",
         speedup["train_images_per_second"] >= TARGETS["train_images_per_second"]),
        ("no-op `dvc repro` ≤ 3 s", "not measured" if noop is None else f"{noop:.2f} s",
         noop is not None and noop <= TARGETS["noop_repro_seconds"]),
        ("peak RSS per stage ≤ 3000 MB", f"{rss} MB", rss <= TARGETS["peak_rss_mb"]),
    ]
    lines = ["| target | this report | met |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {'yes' if ok else '**no**'} |" for name, value, ok in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT / "data")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "report.json")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a param for the project side only (repeatable), like `dvc exp run -S`")
    parser.add_argument("--reuse-reference", type=Path, metavar="REPORT",
                        help="take the reference's phases from an earlier report instead of re-running them")
    parser.add_argument("--render", type=Path, metavar="REPORT",
                        help="print the README tables of an existing report and exit (runs nothing)")
    args = parser.parse_args()
    if args.render:
        report = json.loads(args.render.read_text())
        print(table(report), targets(report), sep="\n\n")
        return
    for npz in ("mnist.npz", "fashion_mnist.npz"):
        if not (args.data / npz).is_file():
            raise SystemExit(f"{args.data / npz}: missing; run `dvc repro download` first")
    # dvc.yaml's `python` and `dvc` are this interpreter's (the venv's), as under `make`, however run.py was started.
    env = os.environ | {"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2",
                        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])}
    params = load_params(ROOT / "params.yaml")
    flops = {f"{task}_{k}": v for task in ("fashion", "mnist")
             for k, v in training_flops(build_model(task, params.model, params.base.image_size)).items()}
    gflops = matmul_gflops()
    with tempfile.TemporaryDirectory(prefix="tlpipe-bench-") as tmp:
        (Path(tmp) / "ref").mkdir()
        (Path(tmp) / "project").mkdir()
        if args.reuse_reference:
            reference = json.loads(args.reuse_reference.read_text())["reference"]["phases"]
        else:
            reference = run_reference(Path(tmp) / "ref", args.data, env)
        project = run_project(Path(tmp) / "project", args.data, env, args.set)
    noop = noop_repro_seconds(env)
    report = summarize(reference, project, gflops, flops, noop, ["python", "benchmarks/run.py", *sys.argv[1:]])
    write_json(args.out, report)
    print(table(report))
    print(targets(report))
    print(json.dumps({k: report[k] for k in ("speedup", "noop_repro_seconds", "peak_rss_mb", "matmul_gflops",
                                              "train_fraction_of_peak")}, indent=2))


if __name__ == "__main__":
    main()
