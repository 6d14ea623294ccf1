"""Benchmark helpers: FLOPs counted from the architecture, and the timed child process."""

from __future__ import annotations

import sys

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
