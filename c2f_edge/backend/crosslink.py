"""Linking model.so for the board, with no system cross toolchain needed by default.

  system  this machine's C compiler (host bundles)
  zig     `python -m ziglang cc -target <zig_target>` from the ziglang wheel (aarch64, armv7)
  ndk     the Android NDK's clang, found through $ANDROID_NDK_HOME
  --cross-compiler CMD overrides all of them (e.g. aarch64-linux-gnu-g++).

We hand TVM our own fcompile instead of tvm.support.cc.cross_compiler: that one puts a list of command
words into argv as a single item, and appends each call's options to its shared default list.
"""

from __future__ import annotations

import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from c2f_edge.core.cache import cache_dir
from c2f_edge.core.errors import ToolchainError

ZIG_INSTALL = "pip install ziglang"
APT_CROSS = {
    "aarch64": "apt-get install g++-aarch64-linux-gnu  (then --cross-compiler aarch64-linux-gnu-g++)",
    "arm": "apt-get install g++-arm-linux-gnueabihf  (then --cross-compiler arm-linux-gnueabihf-g++)",
}


def zig_env() -> dict:
    """Zig builds a libc for each target on first use (~90 s); a stable cache makes that once per machine."""
    zig_cache = cache_dir("zig")
    env = dict(os.environ)
    env.setdefault("ZIG_GLOBAL_CACHE_DIR", str(zig_cache))
    env.setdefault("ZIG_LOCAL_CACHE_DIR", str(zig_cache / "local"))
    return env


@dataclass
class Linker:
    """A command that links TVM's object files into a shared object. Callable as TVM's fcompile."""

    cmd: list[str]
    name: str
    env: dict | None = None
    options: list[str] = field(default_factory=list)

    def __call__(self, output, objects, options=None, **_kwargs):
        objects = [objects] if isinstance(objects, str) else list(objects)
        cmd = [*self.cmd, "-shared", "-fPIC", "-o", str(output), *self.options, *(options or []), *objects]
        try:
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=self.env, check=False)
        except OSError as e:
            raise ToolchainError(f"cannot run the linker {self.cmd[0]}: {e.strerror}",
                                 hint="check --cross-compiler, or install the toolchain") from e
        if proc.returncode != 0:
            out = proc.stdout.decode(errors="replace").strip().splitlines()
            raise ToolchainError(f"{self.name} failed to link {Path(output).name}: {(out or ['?'])[-1][:300]}",
                                 hint=f"command: {shlex.join(cmd)[:300]}")

    def describe(self) -> dict:
        return {"name": self.name, "command": shlex.join(self.cmd)}


def _which_or_fail(cmd: list[str], spec_name: str, hint: str) -> list[str]:
    exe = cmd[0]
    if os.path.sep in exe:
        if not (os.path.isfile(exe) and os.access(exe, os.X_OK)):
            raise ToolchainError(f"cross-linker {exe} not found (target {spec_name})", hint=hint)
        return cmd
    found = shutil.which(exe)
    if not found:
        raise ToolchainError(f"cross-linker {exe!r} is not on PATH (target {spec_name})", hint=hint)
    return [found, *cmd[1:]]


def _apt_hint(triple: str | None) -> str:
    arch = (triple or "").split("-")[0]
    key = "aarch64" if arch in ("aarch64", "arm64") else "arm" if arch.startswith("arm") else ""
    return APT_CROSS.get(key, f"install a C compiler for {triple}")


def zig_linker(zig_target: str) -> Linker:
    if importlib.util.find_spec("ziglang") is None:
        raise ToolchainError(f"no cross-linker for {zig_target}: the ziglang package is not installed",
                             hint=f"{ZIG_INSTALL}, or {_apt_hint(zig_target)}")
    # `cc`, not `c++`: TVM's objects are LLVM output with C linkage, and zig then skips building libc++.
    return Linker([sys.executable, "-m", "ziglang", "cc", "-target", zig_target], name=f"zig cc ({zig_target})",
                  env=zig_env())


def ndk_linker(spec) -> Linker:
    ndk = os.environ.get("ANDROID_NDK_HOME") or os.environ.get("ANDROID_NDK_ROOT")
    hint = ("install the Android NDK (r23+) and set ANDROID_NDK_HOME, or pass --cross-compiler "
            "PATH/TO/aarch64-linux-android24-clang++; zig has no Android libc")
    if not ndk:
        raise ToolchainError(f"target {spec.name} links with the Android NDK, but ANDROID_NDK_HOME is not set",
                             hint=hint)
    bins = sorted((Path(ndk) / "toolchains" / "llvm" / "prebuilt").glob("*/bin"))
    clang = [b / f"{spec.triple}{spec.android_api}-clang++" for b in bins]
    clang = [c for c in clang if c.is_file()]
    if not clang:
        raise ToolchainError(f"no {spec.triple}{spec.android_api}-clang++ under {ndk}/toolchains/llvm/prebuilt",
                             hint=hint)
    return Linker([str(clang[0])], name=f"NDK clang ({clang[0].name})")


def system_linker() -> Linker:
    from tvm.support.cc import get_cc

    cc = get_cc()
    if cc:
        return Linker([cc], name=f"system ({Path(cc).name})")
    if importlib.util.find_spec("ziglang") is not None:
        return Linker([sys.executable, "-m", "ziglang", "cc"], name="zig cc (native)", env=zig_env())
    raise ToolchainError("no C compiler on this machine to link the host bundle",
                         hint=f"apt-get install g++, or {ZIG_INSTALL}")


def linker_for(spec, cross_compiler: str | None = None) -> Linker:
    """The linker for a target: --cross-compiler if given, else what the target file says."""
    if cross_compiler:
        cmd = shlex.split(cross_compiler)
        if not cmd:
            raise ToolchainError("--cross-compiler is empty", hint="e.g. --cross-compiler aarch64-linux-gnu-g++")
        return Linker(_which_or_fail(cmd, spec.name, _apt_hint(spec.triple)), name=cmd[0])
    if spec.linker == "zig":
        return zig_linker(spec.zig_target or spec.triple)
    if spec.linker == "ndk":
        return ndk_linker(spec)
    return system_linker()


def elf_arch(path) -> str:
    """'aarch64', 'arm32', 'x86_64', ... from an ELF header (to check what a bundle runs on)."""
    with open(path, "rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF":
        return "not-elf"
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    bits = {1: "32", 2: "64"}.get(head[4], "?")
    return {0xB7: "aarch64", 0x28: "arm32", 0x3E: "x86_64", 0x03: "x86"}.get(machine, f"em{machine}/{bits}")


def warm(zig_targets=("aarch64-linux-gnu", "arm-linux-gnueabihf")) -> dict[str, float]:
    """Link a one-kernel TVM module per target so zig builds its caches now (e.g. in a CI install step).

    A TVM module, not a C file: zig then caches exactly what linking a model needs.
    """
    import tempfile
    import time

    import tvm
    from tvm import te

    triples = {"aarch64-linux-gnu": "aarch64-linux-gnu", "arm-linux-gnueabihf": "armv7l-linux-gnueabihf"}
    a = te.placeholder((16,), name="a")
    func = te.create_prim_func([a, te.compute((16,), lambda i: a[i] + 1.0, name="b")])
    times = {}
    with tempfile.TemporaryDirectory() as d:
        for t in zig_targets:
            target = {"kind": "llvm", "mtriple": triples.get(t, t)}
            if t.startswith("arm-"):
                target["mfloat-abi"] = "hard" if t.endswith("hf") else "soft"
            lib = tvm.compile(func, target=tvm.target.Target(target))
            t0 = time.perf_counter()
            lib.export_library(str(Path(d) / f"{t}.so"), fcompile=zig_linker(t))
            times[t] = round(time.perf_counter() - t0, 1)
    return times


if __name__ == "__main__":
    # python -m c2f_edge.backend.crosslink [ZIG_TARGET ...]: fill the zig cache (first use costs ~90 s per target).
    for name, secs in warm(tuple(sys.argv[1:]) or ("aarch64-linux-gnu", "arm-linux-gnueabihf")).items():
        print(f"zig cache ready for {name} ({secs} s) in {zig_env()['ZIG_GLOBAL_CACHE_DIR']}")
