"""The benchmark (benchmarks/run.py) and its helpers (benchmarks/bench.py): FLOPs counted from the architecture,
the timed child process, the interleaved schedule, the report and its targets."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from benchmarks.bench import layer_macs, timed, training_flops
from tests.support import ROOT, default_params
from tlpipe.core.model import build_model
from tlpipe.core.params import Model
from tools.doc_tables import render_performance, render_targets


def test_macs_and_flops_of_a_known_model():
    arch = Model(conv_filters=[2, 4, 8], kernel_size=3, pretrain_dense=16, head_dense=5, dropout=0.0, bn_momentum=0.99)
    macs = layer_macs(build_model("target", arch, image_size=8))
    # 8x8x1 -> conv1 8x8x2 -> pool 4x4 -> conv2 4x4x4 -> pool 2x2 -> conv3 2x2x8 -> flatten 32 -> 5 -> 10
    assert macs == {"conv1": 8 * 8 * 2 * 9 * 1, "conv2": 4 * 4 * 4 * 9 * 2, "conv3": 2 * 2 * 8 * 9 * 4,
                    "target_dense": 32 * 5, "target_out": 5 * 10}
    flops = training_flops(build_model("target", arch, image_size=8))
    forward = 2 * sum(macs.values())
    assert flops == {"forward": forward, "train": 3 * forward - 2 * macs["conv1"]}


def test_timed_reports_exit_code_and_peak_rss_of_the_child():
    result = timed([sys.executable, "-c", "x = bytearray(200 * 2**20); x[::4096] = b'1' * len(x[::4096])"])
    assert result["returncode"] == 0 and result["seconds"] > 0
    assert result["peak_rss_mb"] >= 200
    assert timed([sys.executable, "-c", "raise SystemExit(3)"])["returncode"] == 3


def load_runner():
    spec = importlib.util.spec_from_file_location("bench_run", ROOT / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_report_ratios_and_required_keys():
    runner = load_runner()
    images = {"pretrain": 1000, "frozen": 500, "finetune": 500, "scratch": 1000}
    reference = {p: {"seconds": 10.0, "train_images": images[p], "test_accuracy": 0.9, "peak_rss_mb": 100}
                 for p in runner.PHASES}
    project = {s: {"seconds": 5.0, "train_images": images[p], "test_accuracy": 0.95, "peak_rss_mb": 200}
               for p, s in runner.PHASES.items()}
    project["frozen_head"]["seconds"] = 1.0
    project["compare"] = {"seconds": 3.0, "peak_rss_mb": 900}
    flops = {"fashion_train": 2e7, "mnist_train": 1e7}
    order = [f"{side} {name}" for side, name in runner.schedule(reuse_reference=False)]
    report = runner.summarize(reference, project, gflops=100.0, flops=flops, noop=1.5, argv=["bench"], order=order)
    assert report["reference"]["total_seconds"] == 40.0 and report["project"]["total_seconds"] == 16.0
    assert report["speedup"]["total"] == 2.5 and report["speedup"]["frozen_head"] == 10.0
    assert report["speedup"]["per_phase"] == {"pretrain": 2.0, "frozen": 10.0, "finetune": 2.0, "scratch": 2.0}
    assert report["time_ratio_total"] == 0.4  # project 16 s / reference 40 s (compare not counted)
    assert report["speedup"]["train_images_per_second"] == 2.0  # 2500 images in 15 s vs 30 s
    assert report["peak_rss_mb"] == 900 and report["noop_repro_seconds"] == 1.5
    # (1000 * 2e7 + 1500 * 1e7) FLOP in 15 s against 100 GFLOP/s
    assert report["train_fraction_of_peak"] == round(3.5e10 / 15 / 1e11, 3)
    assert report["test_accuracy"]["project"]["finetune"] == 0.95
    assert report["order"] == order and report["reference_reused"] is False
    assert {"cores", "flags"} <= set(report["machine"]) and report["command"] == "bench"
    assert "| **total** | 40.0 | 16.0 | 2.50x |" in render_performance(report)
    assert f", {report['date']} (`results/report.json`" in render_performance(report).splitlines()[-1]


def test_schedule_interleaves_the_sides_phase_by_phase():
    runner = load_runner()
    assert runner.schedule(reuse_reference=False) == [
        ("reference", "pretrain"), ("project", "pretrain"), ("reference", "frozen"), ("project", "frozen_head"),
        ("reference", "finetune"), ("project", "finetune"), ("reference", "scratch"), ("project", "scratch"),
        ("project", "compare")]
    assert runner.schedule(reuse_reference=True) == [
        ("project", "pretrain"), ("project", "frozen_head"), ("project", "finetune"), ("project", "scratch"),
        ("project", "compare")]


def fake_processes(runner, monkeypatch, fail: str | None = None) -> list[tuple[str, str]]:
    """Replace `timed` (and the data) in the runner: record which process ran, write what it would have written."""
    ran = []

    def fake_timed(command, cwd=None, env=None):
        if command[1].endswith("reference.py"):
            phase, work = command[command.index("--phase") + 1], Path(command[command.index("--workdir") + 1])
            assert cwd == str(ROOT)
            (work / f"{phase}.json").write_text(json.dumps({"train_images": 100, "test_accuracy": 0.98}))
            ran.append(("reference", phase))
        else:
            assert command[0] == "python" and Path(cwd, "params.yaml").is_file()
            # dvc.yaml's cmd: python -m stages.<name> ...
            stage = command[2].rsplit(".", 1)[-1] if command[1] == "-m" else Path(command[1]).stem
            if stage == "compare":
                accuracy = {"pretrain": 0.93, "frozen_head": 0.985, "transfer": 0.994, "scratch": 0.995}
                (Path(cwd) / "metrics").mkdir()
                (Path(cwd) / "metrics" / "compare.json").write_text(
                    json.dumps({k: {"test_accuracy": v} for k, v in accuracy.items()}))
            ran.append(("project", stage))
        return {"seconds": 2.0, "returncode": 1 if ran[-1][1] == fail else 0, "peak_rss_mb": 10}

    monkeypatch.setattr(runner, "timed", fake_timed)
    monkeypatch.setattr(runner, "load_npz", lambda path: {"y_train": np.zeros(1000)})
    return ran


def test_processes_run_in_the_interleaved_order_with_epochs_from_params(tmp_path, monkeypatch):
    runner = load_runner()
    ran = fake_processes(runner, monkeypatch)
    (tmp_path / "ref").mkdir()
    (tmp_path / "project").mkdir()
    val_size = yaml.safe_load((ROOT / "params.yaml").read_text())["base"]["val_size"]
    reference, project, order = runner.run_interleaved(tmp_path / "ref", tmp_path / "project", tmp_path / "data",
                                                       {}, ["pretrain.epochs=3"])
    assert ran == runner.schedule(reuse_reference=False)
    assert order == [f"{side} {name}" for side, name in ran]
    assert set(reference) == set(runner.PHASES) and reference["frozen"]["test_accuracy"] == 0.98
    assert project["pretrain"]["epochs"] == 3 and project["pretrain"]["train_images"] == 3 * (1000 - val_size)
    assert project["finetune"]["test_accuracy"] == 0.994 and "test_accuracy" not in project["compare"]


def test_reused_reference_runs_only_the_project_and_a_failure_names_the_process(tmp_path, monkeypatch):
    runner = load_runner()
    ran = fake_processes(runner, monkeypatch)
    earlier = json.loads((ROOT / "results" / "report.json").read_text())["reference"]["phases"]
    for name in ("ref", "project", "project2", "ref3", "project3"):
        (tmp_path / name).mkdir()
    reference, _, order = runner.run_interleaved(tmp_path / "ref", tmp_path / "project", tmp_path / "data", {}, [],
                                                 reference=earlier)
    assert ran == runner.schedule(reuse_reference=True) and reference is earlier
    assert order[0] == "project pretrain"
    ran = fake_processes(runner, monkeypatch, fail="frozen_head")
    with pytest.raises(SystemExit, match="project stage frozen_head failed"):
        runner.run_interleaved(tmp_path / "ref", tmp_path / "project2", tmp_path / "data", {}, [])
    assert ran[-1] == ("project", "frozen_head")
    ran = fake_processes(runner, monkeypatch, fail="finetune")
    with pytest.raises(SystemExit, match="reference phase finetune failed"):
        runner.run_interleaved(tmp_path / "ref3", tmp_path / "project3", tmp_path / "data", {}, [])


def make_report(runner, reference_accuracy=0.99, **change) -> dict:
    """A report with every target met (project at half the reference's time), then `change` applied."""
    reference = {p: {"seconds": 100.0, "test_accuracy": reference_accuracy} for p in runner.PHASES}
    project = {s: {"seconds": 40.0, "test_accuracy": 0.995} for s in runner.PHASES.values()}
    project["frozen_head"]["seconds"] = 20.0
    project["pretrain"]["test_accuracy"] = 0.93
    reference["pretrain"]["test_accuracy"] = 0.90
    report = {"reference": {"phases": reference, "total_seconds": 400.0},
              "project": {"stages": project, "total_seconds": 140.0},
              "speedup": {"total": 2.86, "frozen_head": 5.0, "per_phase": {}, "train_images_per_second": 1.0},
              "time_ratio_total": 0.35, "order": ["reference pretrain", "project pretrain"], "command": "bench",
              "reference_reused": False,
              "noop_repro_seconds": 1.9, "peak_rss_mb": 2400}
    for path, value in change.items():
        *parents, leaf = path.split("__")
        node = report
        for part in parents:
            node = node[part]
        node[leaf] = value
    report["test_accuracy"] = {"reference": {p: r["test_accuracy"] for p, r in reference.items()},
                               "project": {s: r["test_accuracy"] for s, r in project.items()}}
    return report


def marks(table: str) -> list[str]:
    return [row.rsplit("|", 2)[1].strip() for row in table.splitlines()[2:]]


def test_targets_table_has_one_row_per_target_all_met():
    runner = load_runner()
    table = render_targets(make_report(runner))
    assert table.splitlines()[:2] == ["| target | this report | met |", "|---|---|---|"]
    assert marks(table) == ["yes"] * 8
    rows = table.splitlines()[2:]
    assert "0.35× (140.0 s against 400.0 s)" in rows[0] and "all phases at or above" in rows[1]
    assert [r.split("|")[1].strip() for r in rows[2:5]] == [
        "pretrain test accuracy ≥ 0.92", "finetune (MNIST transfer) test accuracy ≥ 0.993",
        "scratch test accuracy ≥ 0.993"]
    assert "5.00× faster" in rows[5] and "1.90 s" in rows[6] and "2400 MB" in rows[7]


def test_targets_table_marks_missed_targets_and_names_what_missed():
    runner = load_runner()
    report = make_report(
        runner, reference_accuracy=0.9935,  # the MNIST phases' reference; the project's are 0.995 unless changed
        project__stages__finetune__test_accuracy=0.9921, project__stages__pretrain__test_accuracy=0.9186,
        project__total_seconds=201.0, time_ratio_total=0.503, speedup__frozen_head=3.99, noop_repro_seconds=None,
        peak_rss_mb=3001)
    rows = render_targets(report).splitlines()[2:]
    assert marks(render_targets(report)) == ["**no**"] * 4 + ["yes"] + ["**no**"] * 3
    assert "0.50× (201.0 s against 400.0 s)" in rows[0]  # 201 > 0.5 × 400 however it rounds
    # the phases below the reference's accuracy in the same run, named with both numbers
    assert "below: finetune 0.9921 < 0.9935 |" in rows[1]  # pretrain (0.9186 > 0.9000) is above its reference
    assert "| pretrain test accuracy ≥ 0.92 | 0.9186 | **no** |" in rows[2]
    assert "| finetune (MNIST transfer) test accuracy ≥ 0.993 | 0.9921 | **no** |" in rows[3]
    assert rows[4].endswith("| 0.9950 | yes |")  # scratch meets its bar: only the missed ones say no
    assert "3.99× faster" in rows[5] and "not measured" in rows[6] and "3001 MB" in rows[7]


def test_committed_report_has_every_key_the_readme_uses():
    """docs/performance.md's tables are rendered from results/report.json (tests/test_readme.py)."""
    report = json.loads((ROOT / "results" / "report.json").read_text())
    for key in ("reference.total_seconds", "project.total_seconds", "speedup.total", "speedup.frozen_head",
                "speedup.per_phase", "speedup.train_images_per_second", "noop_repro_seconds", "peak_rss_mb",
                "matmul_gflops", "train_fraction_of_peak", "test_accuracy.reference", "test_accuracy.project",
                "command", "machine.cores", "machine.model", "machine.flags", "date", "time_ratio_total",
                "reference_reused"):
        value = report
        for part in key.split("."):
            value = value[part]
        assert value is not None, key


def test_overrides_change_only_the_named_params_and_reject_unknown_keys(tmp_path):
    runner = load_runner()
    params_file = tmp_path / "params.yaml"
    params_file.write_text(yaml.safe_dump(default_params(), sort_keys=False))
    runner.apply_overrides(params_file, ["pretrain.epochs=5", "transfer.freeze=[conv1, conv2]"])
    before, after = default_params(), yaml.safe_load(params_file.read_text())
    assert after["pretrain"]["epochs"] == 5 and after["transfer"]["freeze"] == ["conv1", "conv2"]
    after["pretrain"]["epochs"] = before["pretrain"]["epochs"]
    after["transfer"]["freeze"] = before["transfer"]["freeze"]
    assert after == before
    for bad in ("pretrain.epoch=5", "nope.epochs=5", "pretrain.epochs"):
        with pytest.raises(SystemExit, match="--set"):
            runner.apply_overrides(params_file, [bad])
