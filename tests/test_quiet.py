"""TensorFlow's start-up notices are dropped from stderr; every other line is kept."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support import ROOT
from tlpipe._quiet import NOTICES, filtered_stderr


def test_filter_drops_the_notices_and_keeps_other_lines(capfd):
    with filtered_stderr():
        os.write(2, f"I0000 port.cc:153] {NOTICES[1]}. You may see ...\n".encode())
        os.write(2, b"W0000 something.cc:1] a real warning\n")
        os.write(2, f"{NOTICES[3]} AVX2 FMA, in other operations, {NOTICES[4]}.\n".encode())
    assert capfd.readouterr().err == "W0000 something.cc:1] a real warning\n"


def test_importing_tensorflow_through_the_package_prints_no_notice_and_once():
    code = ("import sys, tlpipe, keras, tensorflow as tf\n"
            "assert type(tf.__spec__.loader).__name__ == '_FilteredLoader'\n"
            "print('kept', file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TLPIPE_DEBUG")}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=env | {"PYTHONPATH": str(ROOT)})
    assert result.returncode == 0, result.stderr
    assert not [line for line in result.stderr.splitlines() if any(n in line for n in NOTICES)], result.stderr
    assert "kept" in result.stderr.splitlines()
