"""Compile targets as data: one TOML file per target, found in a few directories.

Search order (an earlier file with the same name wins):
  1. directories in $C2F_EDGE_TARGETS (separated by ':'), for your own boards
  2. ~/.config/c2f-edge/targets/
  3. targets/ at the repository root (beside the c2f_edge package)

A file `NAME.toml` has:
  description = "..."
  linker = "system" | "zig" | "ndk"      # how model.so is linked (see c2f_edge.backend.crosslink)
  triple = "aarch64-linux-gnu"           # what the board runs (for the manifest and --cross-compiler)
  zig_target = "aarch64-linux-gnu"       # for linker = "zig"
  [target]      TVM target JSON; `tag = "..."` starts from a TVM tag; "@system" = this machine's value
  [target.host] host JSON for GPU targets
  [expect]      keys the resolved target (or its host) must have: catches TVM tags that changed
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from c2f_edge.core.errors import UnknownTargetError, UnsupportedError, UsageError, first_line

ENV_DIRS = "C2F_EDGE_TARGETS"
LINKERS = ("system", "zig", "ndk")


@dataclass(frozen=True)
class TargetSpec:
    name: str
    description: str
    target: dict
    linker: str = "system"
    triple: str | None = None
    zig_target: str | None = None
    android_api: int = 24
    expect: dict = field(default_factory=dict)
    source: str = ""

    def to_json(self) -> dict:
        """The TVM target JSON with run-time values ("@system") filled in."""
        return _fill_system(self.target)

    def machine(self) -> str | None:
        """For a target with "@system" values (host): those values as a name, e.g. "rocketlake-2cores".

        A tuning log measured on one CPU is kept under tuning_logs/<target>/<machine>/: it fits only
        that CPU model and core count, and one checkout can carry logs for several machines.
        """
        filled = self.to_json()
        parts = [f"{filled[k]}cores" if k == "num-cores" else str(filled[k])
                 for k, v in self.target.items() if v == "@system"]
        return "-".join(re.sub(r"[^A-Za-z0-9_.]+", "_", p) for p in parts) or None

    def tvm_target(self):
        import tvm

        return tvm.target.Target(self.to_json())

    @property
    def kind(self) -> str:
        t = self.target
        if "kind" in t:
            return t["kind"]
        return str(self.tvm_target().kind.name)

    @property
    def device(self) -> str:
        return "CPU" if self.kind in ("llvm", "c") else "GPU"

    @property
    def runs_here(self) -> bool:
        """True when this machine can load and run the bundle (no cross target)."""
        t = self.to_json()
        return self.device == "CPU" and self.linker == "system" and "mtriple" not in t and "tag" not in t

    def canonical(self) -> dict:
        """TVM's full view of the target (tags expanded), as plain JSON: goes in the manifest."""
        return plain(self.tvm_target().export())

    def check(self) -> None:
        """Raise if the resolved target lacks what [expect] says (e.g. a TVM tag changed)."""
        canon = self.canonical()
        scope = canon if self.device == "CPU" or "host" not in canon else {**canon["host"], **canon}
        for key, want in self.expect.items():
            got = scope.get(key, canon.get("host", {}).get(key))
            if got != want:
                raise UsageError(f"target {self.name}: TVM resolves {key}={got!r}, {self.source} expects {want!r}",
                                 hint="this TVM version changed the target tag; fix the target file")


def plain(x):
    """tvm_ffi Map/Array -> dict/list (json-able)."""
    if hasattr(x, "items"):
        return {str(k): plain(v) for k, v in x.items()}
    if isinstance(x, (str, bytes)):
        return str(x)
    if isinstance(x, (bool, int, float)) or x is None:
        return x
    try:
        return [plain(v) for v in x]
    except TypeError:
        return str(x)


def _fill_system(t: dict) -> dict:
    out = {}
    for k, v in t.items():
        if isinstance(v, dict):
            v = _fill_system(v)
        elif v == "@system":
            v = _system_value(k)
        out[k] = v
    return out


def _system_value(key: str):
    if key == "mcpu":
        import tvm

        return str(tvm.target.codegen.llvm_get_system_cpu())
    if key == "num-cores":
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    raise UsageError(f'"@system" is not supported for target key {key!r}', hint='use it for "mcpu" or "num-cores"')


def search_dirs() -> list[Path]:
    dirs = [Path(d) for d in os.environ.get(ENV_DIRS, "").split(os.pathsep) if d]
    dirs.append(Path.home() / ".config" / "c2f-edge" / "targets")
    dirs.append(Path(__file__).resolve().parents[2] / "targets")
    return dirs


def load_file(path: Path) -> TargetSpec:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise UsageError(f"cannot read target file {path}: {e}", hint="fix the TOML syntax") from e
    if not isinstance(data.get("target"), dict):
        raise UsageError(f"target file {path} has no [target] table", hint="see c2f_edge/targets.py for the format")
    linker = data.get("linker", "system")
    if linker not in LINKERS:
        raise UsageError(f"target file {path}: linker must be one of {', '.join(LINKERS)}, not {linker!r}")
    return TargetSpec(name=path.stem, description=data.get("description", ""), target=data["target"],
                      linker=linker, triple=data.get("triple"), zig_target=data.get("zig_target"),
                      android_api=int(data.get("android_api", 24)), expect=data.get("expect", {}),
                      source=str(path))


def registry() -> dict[str, TargetSpec]:
    """All known targets by name; the first directory in search_dirs() wins on a clash."""
    found: dict[str, TargetSpec] = {}
    for d in search_dirs():
        if d.is_dir():
            for p in sorted(d.glob("*.toml")):
                found.setdefault(p.stem, load_file(p))
    return dict(sorted(found.items()))


def from_json(text: str) -> TargetSpec:
    """A target given as TVM JSON on the command line; the linker follows its (host) mtriple."""
    try:
        t = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"--target looks like JSON but does not parse: {e.msg} at column {e.colno}",
                         hint='e.g. --target \'{"kind":"llvm","mtriple":"aarch64-linux-gnu","mattr":["+neon"]}\'')
    if not isinstance(t, dict) or not ("kind" in t or "tag" in t):
        raise UsageError("a --target JSON must be an object with \"kind\" (or \"tag\")")
    try:
        import tvm

        canon = plain(tvm.target.Target(t).export())
    except Exception as e:
        raise UsageError(f"TVM rejects the target JSON: {first_line(e)}",
                         hint="see `python -c 'import tvm; print(tvm.target.list_tags())'` for tags") from e
    triple = (canon.get("host") or canon).get("mtriple") or None
    if triple is None or triple.startswith("x86_64"):
        linker, zig = "system", None
    elif "android" in triple:
        linker, zig = "ndk", None
    elif triple.startswith(("aarch64", "arm64")):
        linker, zig = "zig", "aarch64-linux-gnu"
    elif triple.startswith("arm"):
        linker, zig = "zig", "arm-linux-gnueabihf" if "hf" in triple else "arm-linux-gnueabi"
    else:
        linker, zig = "zig", triple
    return TargetSpec(name="custom", description="target JSON from the command line", target=t, linker=linker,
                      triple=triple, zig_target=zig, source="--target")


def get(name: str) -> TargetSpec:
    """A target by name, or from a TVM target JSON (a string starting with '{')."""
    if name.lstrip().startswith("{"):
        return from_json(name)
    reg = registry()
    if name in reg:
        return reg[name]
    close = difflib.get_close_matches(name, list(reg), n=1, cutoff=0.5)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UnknownTargetError(f"unknown target {name!r}; valid targets: {', '.join(reg)}",
                             hint=f"{hint}`c2f-edge targets` lists them; a TVM target JSON also works")


def table() -> list[dict]:
    rows = []
    for spec in registry().values():
        rows.append({"name": spec.name, "kind": spec.kind, "triple": spec.triple or "(this machine)",
                     "device": spec.device, "description": spec.description})
    return rows


def as_target(target):
    """A tvm.target.Target from a Target, a JSON dict or a JSON string (TVM 0.27 takes dicts only)."""
    import tvm

    if isinstance(target, tvm.target.Target):
        return target
    if isinstance(target, str) and target.lstrip().startswith("{"):
        target = json.loads(target)
    return tvm.target.Target(target)


def is_gpu(target) -> bool:
    return "gpu" in as_target(target).keys


def check_codegen(target) -> None:
    """Fail early, with a clear message, when this TVM wheel cannot generate code for the target."""
    import tvm

    target = as_target(target)
    for t in (target, target.host) if target.host is not None else (target,):
        kind = t.kind.name
        if tvm.get_global_func(f"target.build.{kind}", allow_missing=True) is None:
            raise UnsupportedError(
                f"the installed TVM wheel (apache-tvm {tvm.__version__}) has no {kind} code generator "
                f"(target.build.{kind} is missing)",
                hint=f"build TVM from source with {kind} enabled, or pick a target from `c2f-edge targets`")
