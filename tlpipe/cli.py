"""Stage entry-point wrapper: a user error becomes one line on stderr and exit code 1."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from tlpipe.errors import PipelineError

DEBUG_ENV = "TLPIPE_DEBUG"


def run(main: Callable[[], None]) -> None:
    """Call `main`; turn PipelineError and Ctrl-C into one line (a traceback only with TLPIPE_DEBUG=1)."""
    stage = os.path.splitext(os.path.basename(sys.argv[0]))[0]
    try:
        main()
    except PipelineError as e:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {stage}: {e}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"interrupted: {stage} stopped; no partial output was kept", file=sys.stderr, flush=True)
        # Outputs are already cleaned up (atomic writes unwound). Skip interpreter teardown: with TensorFlow's
        # worker threads still running, it can abort (SIGABRT) instead of exiting with the code we chose.
        sys.stdout.flush()
        os._exit(130)
