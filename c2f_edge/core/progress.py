"""Progress for long steps: one line per stage on stderr, with its wall time."""

from __future__ import annotations

import contextlib
import os
import sys
import time

_quiet = os.environ.get("C2F_EDGE_QUIET") == "1"


class Stages:
    """`with stages.step("compiling"): ...` prints `[2/4] compiling ... done in 12.3s`."""

    def __init__(self, total: int, stream=None):
        self.total, self.n, self.stream = total, 0, stream or sys.stderr
        self.times: dict[str, float] = {}

    @contextlib.contextmanager
    def step(self, name: str):
        self.n += 1
        t0 = time.perf_counter()
        if not _quiet:
            print(f"[{self.n}/{self.total}] {name} ...", file=self.stream, flush=True)
        try:
            yield
        finally:
            dt = time.perf_counter() - t0
            self.times[name] = round(dt, 3)
        if not _quiet:
            print(f"[{self.n}/{self.total}] {name}: done in {dt:.1f}s", file=self.stream, flush=True)


def bar(iterable=None, **kwargs):
    """A tqdm bar on stderr, off when C2F_EDGE_QUIET=1."""
    from tqdm import tqdm

    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("disable", _quiet)
    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, **kwargs)
