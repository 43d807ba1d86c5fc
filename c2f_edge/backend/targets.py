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
  split_reduction = true                 # build with compile --split-reduction unless --no-split-reduction
  [target]      TVM target JSON; `tag = "..."` starts from a TVM tag; "@system" = this machine's value
  [target.host] host JSON for GPU targets
  [expect]      keys the resolved target (or its host) must have: catches TVM tags that changed
"""

from __future__ import annotations

import contextlib
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
    split_reduction: bool = False  # the default of compile --split-reduction (where it was measured to gain)

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
        """Raise if LLVM does not know a field, or the resolved target lacks what [expect] says (e.g. a
        TVM tag changed)."""
        check_llvm_fields(self.to_json(), self.source or self.name)
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
        raise UsageError(f"target file {path}: linker must be one of {', '.join(LINKERS)}, not {linker!r}",
                         hint="zig cross-links ARM Linux targets, ndk Android ones, system this machine's")
    split = data.get("split_reduction", False)
    if not isinstance(split, bool):
        raise UsageError(f"target file {path}: split_reduction must be true or false, not {split!r}",
                         hint="true builds with compile --split-reduction by default")
    return TargetSpec(name=path.stem, description=data.get("description", ""), target=data["target"],
                      linker=linker, triple=data.get("triple"), zig_target=data.get("zig_target"),
                      android_api=int(data.get("android_api", 24)), expect=data.get("expect", {}),
                      source=str(path), split_reduction=split)


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
        raise UsageError("a --target JSON must be an object with \"kind\" (or \"tag\")",
                         hint='e.g. --target \'{"kind":"llvm","mtriple":"aarch64-linux-gnu","mattr":["+neon"]}\'')
    check_llvm_fields(t, "--target")
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


# --- validation of the LLVM fields, before TVM or LLVM see them ------------------------------------------
# LLVM reports a triple it does not know and then crashes the process; a CPU or feature it does not know
# is only a warning, and the build silently targets something else. So every field is checked first.

_ARCH_ALIASES = {"arm64": "aarch64", "amd64": "x86_64", "i486": "i386", "i586": "i386", "i686": "i386"}
COMMON_FEATURES = ("neon", "fullfp16", "dotprod", "i8mm", "bf16", "sve", "sve2", "vfp4", "d32", "avx2", "fma",
                   "avx512f", "avx512fp16", "avxvnni")
EXAMPLE_TRIPLES = ("aarch64-linux-gnu", "armv7l-linux-gnueabihf", "aarch64-linux-android", "x86_64-linux-gnu")


def _triple_arch(triple: str) -> str:
    arch = triple.split("-", 1)[0].lower()
    if arch.startswith("thumb"):
        return "thumb"
    if arch.startswith("arm") and arch not in ("arm64", "armeb"):
        return "arm"  # armv7l, armv7a, armv8l: subarchitectures of LLVM's arm target
    return _ARCH_ALIASES.get(arch, arch)


def _did_you_mean(value: str, choices) -> str:
    close = difflib.get_close_matches(value, list(choices), n=3, cutoff=0.6)
    return f"did you mean {' or '.join(repr(c) for c in close)}? " if close else ""


def check_llvm_fields(t, where: str) -> None:
    """UsageError (one line, with the valid choices) for an llvm target dict -- or a GPU target's "host"
    -- whose mtriple, mcpu or mattr this TVM's LLVM does not know."""
    with _quiet_stderr():  # LLVM prints its own warnings about what is probed here
        _check_llvm_fields(t, where)


@contextlib.contextmanager
def _quiet_stderr():
    """Silence file descriptor 2 (C++ code writes there directly), restoring it afterwards."""
    import sys

    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _check_llvm_fields(t, where: str) -> None:
    if not isinstance(t, dict):
        raise UsageError(f"{where}: a target must be a JSON object, not {type(t).__name__}",
                         hint='e.g. {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}')
    if isinstance(t.get("host"), dict):
        _check_llvm_fields(t["host"], f"{where} host")
    if t.get("kind") != "llvm":
        return
    from tvm.target import codegen

    triple = t.get("mtriple")
    if "mtriple" in t:  # an explicit null is a mistake too (TVM rejects it with a message about its schema)
        if not isinstance(triple, str) or not triple.strip():
            raise UsageError(f"{where}: mtriple must be a string such as 'aarch64-linux-gnu', got {triple!r}",
                             hint=f"e.g. {', '.join(EXAMPLE_TRIPLES)}; leave it out to build for this machine")
        arch = _triple_arch(triple)
        known = sorted(str(a) for a in codegen.llvm_get_targets())
        if arch not in known:
            raise UsageError(f"{where}: LLVM does not know the target triple {triple!r} (architecture {arch!r})",
                             hint=_did_you_mean(arch, known)
                             + f"e.g. {', '.join(EXAMPLE_TRIPLES)}; architectures: {', '.join(known)}")
    triple = triple or str(codegen.llvm_get_system_triple())
    mcpu = t.get("mcpu")
    if "mcpu" in t:
        if not isinstance(mcpu, str) or not mcpu.strip():
            raise UsageError(f"{where}: mcpu must be a CPU name such as 'cortex-a76', got {mcpu!r}",
                             hint="leave it out for the triple's generic CPU; `c2f-edge targets` lists tested ones")
        if mcpu != "@system" and not codegen.llvm_is_valid_cpu(mcpu, triple):
            cpus = _cpus(triple)
            raise UsageError(f"{where}: LLVM knows no CPU {mcpu!r} for {triple}",
                             hint=_did_you_mean(mcpu, cpus) + f"{len(cpus)} CPUs, e.g. "
                             + ", ".join(c for c in cpus if c.startswith(("cortex", "neoverse", "x86-64")))[:200])
    mattr = t.get("mattr")
    if "mattr" in t:
        if not isinstance(mattr, list) or not all(isinstance(f, str) for f in mattr):
            raise UsageError(f"{where}: mattr must be a list of features such as [\"+neon\"], got {mattr!r}",
                             hint='write it as a JSON list of strings, e.g. "mattr": ["+neon", "+fullfp16"]')
        for feat in mattr:
            if feat[:1] not in ("+", "-") or len(feat) < 2:
                raise UsageError(f"{where}: mattr entry {feat!r} must be +FEATURE or -FEATURE, e.g. \"+neon\"",
                                 hint="+ turns a feature on, - turns it off; LLVM's names, e.g. neon, fullfp16, avx2")
            if not _feature_known(triple, feat[1:]):
                vocab = _features(triple)
                common = [f for f in COMMON_FEATURES if f in vocab] or sorted(vocab)[:10]
                raise UsageError(f"{where}: LLVM knows no feature {feat[1:]!r} for {triple}",
                                 hint=_did_you_mean(feat[1:], vocab)
                                 + f"{len(vocab)} features, e.g. {', '.join(common)}")


def _cpus(triple: str) -> list[str]:
    import tvm
    from tvm.target import codegen

    return sorted(str(c) for c in codegen.llvm_get_cpu_archlist(tvm.target.Target({"kind": "llvm", "mtriple": triple})))


def _feature_known(triple: str, name: str) -> bool:
    """LLVM knows a feature if turning it on shows it among the target's features."""
    import tvm
    from tvm.target import codegen

    t = tvm.target.Target({"kind": "llvm", "mtriple": triple, "mattr": [f"+{name}"]})
    return name in {str(f) for f in codegen.llvm_get_cpu_features(t)}


def _features(triple: str) -> set[str]:
    """Every feature some CPU of the triple's architecture has (the vocabulary for a did-you-mean)."""
    import tvm
    from tvm.target import codegen

    out: set[str] = set()
    for cpu in _cpus(triple):
        t = tvm.target.Target({"kind": "llvm", "mtriple": triple, "mcpu": cpu})
        out |= {str(f) for f in codegen.llvm_get_cpu_features(t)}
    return out
