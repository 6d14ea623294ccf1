"""Benchmark helpers: FLOPs from the architecture, the machine's matmul rate, timed child processes, the CPU.

benchmarks/ and research/ use them. Keras and TensorFlow are imported where needed, so that `time_command.py` runs
before the project's .venv exists (e.g. to time `make repro` from a fresh clone).
"""

from __future__ import annotations

import os
import subprocess
import time


def layer_macs(model) -> dict[str, int]:
    """Multiply-accumulates per image of each Conv2D and Dense layer of a Keras model (the layers with the FLOPs)."""
    import keras

    macs = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, filters = layer.output.shape
            kh, kw = layer.kernel_size
            macs[layer.name] = h * w * filters * kh * kw * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            macs[layer.name] = layer.input.shape[-1] * layer.units
    return macs


def training_flops(model) -> dict[str, float]:
    """FLOPs per image: forward, and a full training step (forward + weight gradients + input gradients).

    A MAC is 2 FLOPs. The backward pass costs two forward passes (weight and input gradients), except that
    the first layer needs no input gradient. BatchNorm, ReLU and pooling are elementwise and left out.
    """
    macs = layer_macs(model)
    forward = 2 * sum(macs.values())
    first = next(iter(macs.values()))
    return {"forward": float(forward), "train": float(3 * forward - 2 * first)}


def matmul_gflops(size: int = 2048, repeats: int = 20) -> float:
    """Best observed fp32 matmul rate (GFLOP/s) of this machine through TensorFlow, square `size` matrices."""
    import tensorflow as tf

    a = tf.random.normal((size, size))
    b = tf.random.normal((size, size))
    matmul = tf.function(tf.matmul)
    matmul(a, b).numpy()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(a, b).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def timed(command: list[str], cwd: str | None = None, env: dict | None = None) -> dict:
    """Run `command`; return its wall seconds, exit code and peak RSS (MB) including its waited-for children."""
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=cwd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": round(seconds, 2), "returncode": proc.returncode, "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def cpu_info() -> dict:
    """Cores, model name and the SIMD flags that matter for training (tlpipe.core.live reads /proc/cpuinfo)."""
    from tlpipe.core.live import cpu_model, cpuinfo  # Python alone: DVCLive is imported only where it logs

    flags = set(cpuinfo().get("flags", "").split())
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    return {"cores": os.cpu_count(), "model": cpu_model(), "flags": [f for f in wanted if f in flags]}
