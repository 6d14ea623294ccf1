"""Stage entry-point wrapper: a user error becomes one line on stderr and exit code 1."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

from tlpipe.errors import PipelineError
from tlpipe.io import remove_pending

DEBUG_ENV = "TLPIPE_DEBUG"


def run(main: Callable[[], None]) -> None:
    """Call `main`; turn PipelineError and Ctrl-C into one line (a traceback only with TLPIPE_DEBUG=1)."""
    stage = os.path.splitext(os.path.basename(sys.argv[0]))[0]

    def interrupted(signum: int, frame: object) -> None:
        # Exit at once instead of raising KeyboardInterrupt into TensorFlow: unwinding through its running
        # input pipeline and worker threads could crash the process (seen: SIGABRT, "free(): invalid next size").
        # Outputs are written atomically, so removing the temporary files of writes in progress is all the
        # cleanup there is; os._exit skips interpreter teardown for the same reason.
        remove_pending()
        print(f"interrupted: {stage} stopped; no partial output was kept", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(130)

    if not os.environ.get(DEBUG_ENV):
        signal.signal(signal.SIGINT, interrupted)
    try:
        main()
    except PipelineError as e:
        if os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {stage}: {e}", file=sys.stderr)
        sys.exit(1)
