"""Benchmark helpers: FLOPs counted from the architecture, and the timed child process."""

from __future__ import annotations

import importlib.util
import json
import sys

import pytest
import yaml

from tests.support import ROOT
from tlpipe.bench import layer_macs, timed, training_flops
from tlpipe.model import build_model
from tlpipe.params import Model


def test_macs_and_flops_of_a_known_model():
    arch = Model(conv_filters=[2, 4, 8], kernel_size=3, pretrain_dense=16, head_dense=5, dropout=0.0, bn_momentum=0.99)
    macs = layer_macs(build_model("mnist", arch, image_size=8))
    # 8x8x1 -> conv1 8x8x2 -> pool 4x4 -> conv2 4x4x4 -> pool 2x2 -> conv3 2x2x8 -> flatten 32 -> 5 -> 10
    assert macs == {"conv1": 8 * 8 * 2 * 9 * 1, "conv2": 4 * 4 * 4 * 9 * 2, "conv3": 2 * 2 * 8 * 9 * 4,
                    "mnist_dense": 32 * 5, "mnist_out": 5 * 10}
    flops = training_flops(build_model("mnist", arch, image_size=8))
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
    report = runner.summarize(reference, project, gflops=100.0, flops=flops, noop=1.5, argv=["bench"])
    assert report["reference"]["total_seconds"] == 40.0 and report["project"]["total_seconds"] == 16.0
    assert report["speedup"]["total"] == 2.5 and report["speedup"]["frozen_head"] == 10.0
    assert report["speedup"]["train_images_per_second"] == 2.0  # 2500 images in 15 s vs 30 s
    assert report["peak_rss_mb"] == 900 and report["noop_repro_seconds"] == 1.5
    # (1000 * 2e7 + 1500 * 1e7) FLOP in 15 s against 100 GFLOP/s
    assert report["train_fraction_of_peak"] == round(3.5e10 / 15 / 1e11, 3)
    assert report["test_accuracy"]["project"]["finetune"] == 0.95
    assert {"cores", "flags"} <= set(report["machine"]) and report["command"] == "bench"
    assert "| **total** | 40.0 | 16.0 | 2.50x |" in runner.table(report)


def test_targets_table_marks_each_target_and_missed_bars():
    runner = load_runner()
    report = {"speedup": {"total": 2.5, "frozen_head": 4.0, "train_images_per_second": 1.9},
              "test_accuracy": {"project": {"pretrain": 0.92, "finetune": 0.9921, "scratch": 0.995}},
              "noop_repro_seconds": 3.4, "peak_rss_mb": 2100}
    rows = runner.targets(report).splitlines()[2:]
    assert [row.rsplit("|", 2)[1].strip() for row in rows] == ["**no**", "**no**", "yes", "**no**", "yes"]
    assert "0.40× the reference; bars missed: finetune 0.9921 < 0.993" in rows[0]


def test_readme_performance_tables_are_the_committed_report():
    """The README's numbers are copied from benchmarks/report.json (`run.py --render`), never typed in."""
    runner = load_runner()
    report = json.loads((ROOT / "benchmarks" / "report.json").read_text())
    for key in ("reference.total_seconds", "project.total_seconds", "speedup.total", "speedup.frozen_head",
                "speedup.train_images_per_second", "noop_repro_seconds", "peak_rss_mb", "matmul_gflops",
                "train_fraction_of_peak", "test_accuracy.reference", "test_accuracy.project", "command",
                "machine.cores", "machine.flags"):
        value = report
        for part in key.split("."):
            value = value[part]
        assert value is not None, key
    readme = (ROOT / "README.md").read_text()
    assert runner.table(report) in readme and runner.targets(report) in readme


def test_overrides_change_only_the_named_params_and_reject_unknown_keys(tmp_path):
    runner = load_runner()
    params_file = tmp_path / "params.yaml"
    params_file.write_text((ROOT / "params.yaml").read_text())
    runner.apply_overrides(params_file, ["pretrain.epochs=5", "transfer.freeze=[conv1, conv2]"])
    before, after = (yaml.safe_load(f.read_text()) for f in (ROOT / "params.yaml", params_file))
    assert after["pretrain"]["epochs"] == 5 and after["transfer"]["freeze"] == ["conv1", "conv2"]
    after["pretrain"]["epochs"] = before["pretrain"]["epochs"]
    after["transfer"]["freeze"] = before["transfer"]["freeze"]
    assert after == before
    for bad in ("pretrain.epoch=5", "nope.epochs=5", "pretrain.epochs"):
        with pytest.raises(SystemExit, match="--set"):
            runner.apply_overrides(params_file, [bad])


def test_readme_half_epochs_numbers_are_the_committed_variant_report():
    report = json.loads((ROOT / "benchmarks" / "report-half-epochs.json").read_text())
    readme = (ROOT / "README.md").read_text()
    accuracy = report["test_accuracy"]["project"]
    assert f"{1 / report['speedup']['total']:.2f}× the reference's time" in readme
    assert (f"pretrain {accuracy['pretrain']:.4f}, frozen head {accuracy['frozen_head']:.4f}, "
            f"transfer {accuracy['finetune']:.4f} and scratch {accuracy['scratch']:.4f}") in " ".join(readme.split())
    assert "--set pretrain.epochs=5" in report["command"]
