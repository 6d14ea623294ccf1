"""Download faults against a local HTTP server on 127.0.0.1, and Ctrl-C during a stage."""

from __future__ import annotations

import gzip
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import yaml

from tests.support import idx_bytes, run_stage, tiny_params
from tlpipe.core.data import Source, load_dataset
from tlpipe.core.errors import PipelineError


@pytest.fixture
def server(mirror):
    """Serves the mirror's mnist files under /ok/; /err500/, /hang/, /trunc/ and /wrong/ misbehave."""
    root = mirror[0] / "mnist"
    hits: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            mode, name = self.path.strip("/").split("/", 1)
            hits[mode] = hits.get(mode, 0) + 1
            body = (root / name).read_bytes()
            if mode == "err500":
                self.send_error(500)
                return
            if mode == "hang":
                time.sleep(2)
            if mode == "wrong":
                body = gzip.compress(idx_bytes(np.zeros(100, np.uint8)))
            try:
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if mode == "trunc" else body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (its timeout), as the test intends

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", hits
    httpd.shutdown()
    httpd.server_close()


def fetch_all(base, modes, digests, retries=2):
    sources = [Source(f"{base}/{mode}/") for mode in modes]
    return load_dataset("mnist", sources, digests["mnist"], 28, timeout=0.5, retries=retries, backoff=0.01,
                        log=lambda _msg: None)


def test_bad_sources_are_retried_then_skipped(server, mirror):
    base, hits = server
    arrays = fetch_all(base, ["err500", "hang", "trunc", "wrong", "ok"], mirror[1])
    assert len(arrays["y_train"]) == 400
    assert hits["err500"] == 2 and hits["hang"] == 2 and hits["trunc"] == 2  # bounded retries on each
    assert hits["wrong"] == 1  # a good transfer of bad bytes is not retried: checked, then the next source
    assert hits["ok"] == 4


def test_every_failure_is_listed(server, mirror):
    base, _ = server
    with pytest.raises(PipelineError) as err:
        fetch_all(base, ["err500", "hang", "trunc", "wrong"], mirror[1], retries=1)
    message = str(err.value)
    assert f"{base}/err500/train-images-idx3-ubyte.gz: HTTP 500 (after 1 attempt(s))" in message
    assert f"{base}/hang/train-images-idx3-ubyte.gz: timed out" in message
    assert f"{base}/trunc/train-images-idx3-ubyte.gz: " in message
    assert f"{base}/wrong/train-images-idx3-ubyte.gz: IDX file has 1 dimensions, expected 3" in message
    assert "DATA_MIRROR" in message


def test_ctrl_c_stops_promptly_with_one_line(tmp_path, mirror, data_dir):
    params = tiny_params(mirror[1])
    params["scratch"]["epochs"] = 10_000
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    proc = run_stage(tmp_path, "scratch", str(data_dir / "target.npz"), "models/s.named.h5", "logs",
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line in proc.stdout:
        if line.startswith("Epoch 3/"):
            break
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("interrupted: scratch stopped")
    assert not (tmp_path / "models").exists()
