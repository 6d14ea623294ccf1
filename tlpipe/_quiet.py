"""Drop TensorFlow's start-up notices from stderr, keeping every other line (real warnings and errors)."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.util
import os
import sys
import tempfile

# Lines TensorFlow's C++ side writes at import on every run, which say nothing about this run.
NOTICES = (
    "All log messages before absl::InitializeLog() is called are written to STDERR",
    "oneDNN custom operations are on",
    "This TensorFlow binary is optimized to use available CPU instructions",
    "To enable the following instructions:",
    "rebuild TensorFlow with the appropriate compiler flags",
)


@contextlib.contextmanager
def filtered_stderr():
    """Send file descriptor 2 to a temporary file for the block, then write back the lines that are no notice."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().decode(errors="replace").splitlines(keepends=True)
                    if not any(notice in line for notice in NOTICES)]
            if kept:
                sys.stderr.write("".join(kept))
                sys.stderr.flush()


class _AlreadyImported(importlib.abc.Loader):
    def create_module(self, spec):
        return sys.modules[spec.name]

    def exec_module(self, module) -> None:
        pass


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Imports `tensorflow` the first time anything asks for it, with the notices filtered out."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)
        with filtered_stderr():
            importlib.import_module("tensorflow")
        return importlib.util.spec_from_loader(name, _AlreadyImported())


def quiet_tensorflow_startup() -> None:
    """Arrange for the first `import tensorflow` (keras, dvclive.keras, ...) to drop the start-up notices."""
    if os.environ.get("TLPIPE_DEBUG") or "tensorflow" in sys.modules:
        return
    if not any(isinstance(finder, _QuietFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder())
