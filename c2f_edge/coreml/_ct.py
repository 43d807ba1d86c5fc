"""One way to import coremltools: with its known noise filtered by exact message, and private temp dirs."""

from __future__ import annotations

import contextlib
import logging
import re
import shutil
import tempfile
import warnings
from pathlib import Path

# Exact messages that say nothing actionable here. Anything else coremltools logs still shows.
_NOISE = re.compile(
    r"^(Torch version [\w.+]+ has not been tested with coremltools\. You may run into unexpected errors\."
    r"|XGBoost version [\w.+]+ has not been tested with coremltools\."
    r"|scikit-learn version [\w.+]+ is not supported\. Minimum required version: [\w.]+\. Maximum required"
    r"|Failed to load _ML\w+Proxy: No module named 'coremltools\.libcoremlpython'$)"
)


class _NoiseFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not _NOISE.match(record.getMessage())


_installed = False


def install_filters() -> None:
    global _installed
    if _installed:
        return
    # coremltools logs its import-time warnings on the "coremltools" logger itself, so one filter covers them.
    logging.getLogger("coremltools").addFilter(_NoiseFilter())
    _warning_filters()
    _installed = True


def _warning_filters() -> None:
    # torch.export's pytree deprecation, triggered by coremltools' ExportedProgram frontend.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    # coremltools' own frontend calls its deprecated registry accessor once per op (hundreds of times).
    warnings.filterwarnings("ignore", message=r"Function _TORCH_OPS_REGISTRY\.__contains__ is deprecated",
                            category=DeprecationWarning)


@contextlib.contextmanager
def quiet():
    """Around conversion/compression: the filters again, scoped (test runners reset global filters)."""
    install_filters()
    with warnings.catch_warnings():
        _warning_filters()
        yield


def ct():
    """`import coremltools`, quietly."""
    install_filters()
    import coremltools

    return coremltools


@contextlib.contextmanager
def private_tempdir(prefix: str = "c2f-coreml-"):
    """Point `tempfile` at a fresh directory for the duration, then delete it.

    coremltools writes a temporary .mlpackage (and weights) under the system temp dir for every converted
    or compressed model and relies on `__del__` to remove it; this makes the cleanup certain.
    """
    root = Path(tempfile.mkdtemp(prefix=prefix))
    saved = tempfile.tempdir
    tempfile.tempdir = str(root)
    try:
        yield root
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(root, ignore_errors=True)
