"""Stage entry-point wrapper: a user error becomes one line on stderr and exit code 1."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from collections.abc import Callable

from tlpipe.core import io
from tlpipe.core.errors import PipelineError

DEBUG_ENV = "TLPIPE_DEBUG"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_dvc() -> None:
    """In a command that DVC runs (it sets DVC_STAGE), ask Linux to send SIGTERM when the parent, dvc, dies, so
    that a killed `dvc repro` leaves no stage training on behind it; io also refuses to publish outputs once the
    parent is gone. Once per process: stages/__init__.py calls it before TensorFlow's seconds-long import."""
    if not os.environ.get("DVC_STAGE") or io.PARENT is not None:
        return
    io.PARENT = os.getppid()
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != io.PARENT or io.PARENT == 1:  # dvc died before the request took effect, or long before
        os._exit(143)


def run(main: Callable[[], None]) -> None:
    """Call `main`; turn PipelineError, OSError, Ctrl-C and SIGTERM into one line (a traceback only with
    TLPIPE_DEBUG=1)."""
    die_with_dvc()
    stage = os.path.splitext(os.path.basename(sys.argv[0]))[0]

    def stopped(signum: int, frame: object) -> None:
        # Exit at once instead of raising KeyboardInterrupt into TensorFlow: unwinding through its running
        # input pipeline and worker threads could crash the process (seen: SIGABRT, "free(): invalid next size").
        # Outputs are written atomically, so removing the temporary files of writes in progress is all the
        # cleanup there is; os._exit skips interpreter teardown for the same reason.
        io.remove_pending()
        how = "interrupted" if signum == signal.SIGINT else "terminated"
        print(f"{how}: {stage} stopped; no partial output was kept", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(128 + signum)

    if not os.environ.get(DEBUG_ENV):
        signal.signal(signal.SIGINT, stopped)
        signal.signal(signal.SIGTERM, stopped)
    try:
        main()
    except (PipelineError, OSError) as e:
        if os.environ.get(DEBUG_ENV):
            raise
        if isinstance(e, OSError):  # a disk full, a folder gone read-only: the path and the reason
            where = f"{e.filename}: " if e.filename else ""
            e = f"{where}{e.strerror or e}"
        print(f"error: {stage}: {e}", file=sys.stderr)
        sys.exit(1)
