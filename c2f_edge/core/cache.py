"""Where c2f-edge keeps what it builds once per machine (the emulated board, zig's libc, module scopes)."""

from __future__ import annotations

import os
from pathlib import Path

ENV = "C2F_EDGE_CACHE"


def cache_root() -> Path:
    """$C2F_EDGE_CACHE, else $XDG_CACHE_HOME/c2f-edge, else ~/.cache/c2f-edge."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "c2f-edge"


def cache_dir(name: str) -> Path:
    """A subdirectory of the cache root, created if missing."""
    d = cache_root() / name
    d.mkdir(parents=True, exist_ok=True)
    return d
