"""One way to build the project's native code: the kernel runner (cross-built with zig) and the qemu plugin
(a host build). Each output is cached under the cache root by a hash of everything that went into it, and
appears only when the compiler succeeded, so a failed or interrupted build never leaves a file to reuse."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from c2f_edge.core.cache import cache_dir
from c2f_edge.core.errors import ToolchainError

CACHE = "native"  # under core.cache.cache_root()


def build(name: str, sources: list[Path], compiler: list[str], args: list[str], *, hint: str,
          env: dict | None = None, inputs: list[Path] = ()) -> Path:
    """`compiler -o OUT sources args`, cached as native/<name>-<hash>. `inputs` are extra files that the hash
    must follow (headers); `hint` says how to get the compiler when it fails."""
    h = hashlib.sha256("\0".join([*compiler, *args]).encode())
    for f in (*sources, *inputs):
        h.update(Path(f).read_bytes())
    out = cache_dir(CACHE) / f"{name}-{h.hexdigest()[:12]}"
    if out.is_file():
        return out
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    try:
        proc = subprocess.run([*compiler, "-o", str(tmp), *map(str, sources), *args], capture_output=True,
                              text=True, env=env, check=False)
    except FileNotFoundError as e:
        raise ToolchainError(f"building {name}: {compiler[0]} not found", hint=hint) from e
    if proc.returncode:
        tmp.unlink(missing_ok=True)
        lines = proc.stderr.strip().splitlines() or ["(no output)"]
        first = next((ln for ln in lines if "error" in ln), lines[-1])  # the first error, not the summary
        raise ToolchainError(f"building {name} failed: {first.strip()[-300:]}", hint=hint)
    os.replace(tmp, out)
    return out
