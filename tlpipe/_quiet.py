"""Drop TensorFlow's start-up notices from stderr, keeping every other line (real warnings and errors)."""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
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


class _FilteredLoader(importlib.abc.Loader):
    """TensorFlow's own loader, its module executed (once) with the notices filtered out of stderr."""

    def __init__(self, loader: importlib.abc.Loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module) -> None:
        with filtered_stderr():
            self.loader.exec_module(module)

    def __getattr__(self, name: str):  # get_resource_reader, is_package, ...: the real loader's
        return getattr(self.loader, name)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds `tensorflow` as usual, once, and hands its import to _FilteredLoader."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: later finds, and the package's own submodules, are TensorFlow's
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _FilteredLoader(spec.loader)
        return spec


def quiet_tensorflow_startup() -> None:
    """Arrange for the first `import tensorflow` (keras, dvclive.keras, ...) to drop the start-up notices."""
    if os.environ.get("TLPIPE_DEBUG") or "tensorflow" in sys.modules:
        return
    if not any(isinstance(finder, _QuietFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder())
