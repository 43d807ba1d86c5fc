"""Instruction counts of aarch64 code under qemu, from a TCG plugin of our own (insn_count.c).

Emulated time means nothing, but which instructions a program executes does not depend on the host: the
counts are deterministic. The guest brackets what to count with two marker syscalls (`MARKERS`), e.g.
`os.getpgid(START)` ... `os.getpgid(STOP)` in Python, each failing harmlessly with ESRCH. The plugin writes
every basic block run inside those regions with its executions and instruction words (`read_profile`); the
classes (`CLASSES`) are decoded here from the words, not from qemu's disassembly, which misses some fp16
forms. The per-block record is what the cycle model reads too.

Setup (cached under ${C2F_EDGE_CACHE:-~/.cache/c2f-edge}): `python -m c2f_edge.board.insn_count setup` takes
qemu's plugin header from the Debian source of the installed qemu-user and builds the plugin with gcc.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from c2f_edge.board import cycle_model
from c2f_edge.board.a64 import _ID, CLASSES, FMA_LANES, classify
from c2f_edge.board.block_profile import Profile, read_profile
from c2f_edge.core import apt, native
from c2f_edge.core.cache import cache_dir
from c2f_edge.core.errors import ArtifactError, C2FError, ToolchainError, UsageError, first_line, report

SOURCE = Path(__file__).with_name("insn_count.c")
GUEST = Path(__file__).with_name("insn_guest.py")  # runs in the emulated Python
QEMU = "qemu-aarch64"  # the dynamic build: qemu-aarch64-static cannot load plugins
QEMU_PACKAGE = "qemu-user"
MARKER_SYSCALL = 155  # getpgid on aarch64
START, STOP = 0x3C2F0001, 0x3C2F0002
HEADER = "include/qemu/qemu-plugin.h"



def plugin_header(fetch: bool = False) -> Path:
    """qemu-plugin.h of the installed qemu-user (no Debian package ships it), cached per qemu version.
    Only setup fetches it (`fetch`): nothing is downloaded while counting."""
    version = subprocess.run(["dpkg-query", "-W", "-f=${source:Version}", QEMU_PACKAGE], capture_output=True,
                             text=True, check=False).stdout.strip()
    if not version:
        raise ToolchainError(f"{QEMU_PACKAGE} is not installed: it is the qemu that loads plugins",
                             hint="run `sudo scripts/setup_emulator.sh` (make setup-system)")
    dest = cache_dir("qemu-plugin") / version.replace(":", "_") / "qemu-plugin.h"
    if not dest.is_file():
        if not fetch:
            raise ToolchainError(f"the qemu plugin header for qemu {version} is not set up",
                                 hint="run `make setup-system` (or `python -m c2f_edge.board.insn_count setup`)")
        apt.source_file("qemu", version, HEADER, dest)
    return dest


def plugin(fetch: bool = False) -> Path:
    """The plugin built for this host with gcc, cached."""
    header = plugin_header(fetch)
    return native.build("insn-count.so", [SOURCE], ["gcc"],
                        ["-O2", "-fPIC", "-shared", "-Wall", "-I", str(header.parent), "-lpthread"],
                        inputs=[header], hint="apt-get install gcc")


def command(args: list[str], out: Path, cpu: str = "cortex-a76", rootfs: Path | None = None,
            split: bool = False) -> list[str]:
    """qemu-aarch64 running `args` on `cpu` with the plugin writing its profile to `out` (`split`: each
    region to `out`.N, read with read_regions)."""
    qemu = shutil.which(QEMU)
    if not qemu:
        raise ToolchainError(f"{QEMU} not found: the dynamic qemu-user loads the counting plugin",
                             hint="run `sudo scripts/setup_emulator.sh` (make setup-system)")
    cmd = [qemu, "-cpu", cpu, "-plugin", f"{plugin()},out={out},marker={MARKER_SYSCALL},start={START},stop={STOP}"
           + (",split=1" if split else "")]
    return cmd + (["-L", str(rootfs)] if rootfs else []) + list(args)


def read_regions(out: Path) -> list[Profile]:
    """The regions a split run wrote (command(split=True)), in the order they closed."""
    return [read_profile(f"{out}.{i}") for i in range(read_profile(out).regions)]


def summarize(profile: Profile) -> dict:
    """Instructions in the regions, per class, NEON bytes loaded and stored, and FMA lanes."""
    cls, nbytes = classify(profile.words)
    execs = profile.executions_per_word().astype(np.int64)
    per_class = np.bincount(cls, weights=execs, minlength=len(CLASSES)).astype(np.int64)
    out = {"regions": profile.regions, "instructions": int(execs.sum()),
           "classes": {name: int(per_class[i]) for i, name in enumerate(CLASSES)}}
    out["neon_load_bytes"] = int((execs * nbytes)[cls == _ID["neon_load"]].sum())
    out["neon_store_bytes"] = int((execs * nbytes)[cls == _ID["neon_store"]].sum())
    out["fma_lanes"] = sum(out["classes"][name] * lanes for name, lanes in FMA_LANES.items())
    return out


@dataclass
class Function:
    """What one function (or mapped file) ran inside the regions."""

    name: str
    instructions: int
    classes: dict[str, int]
    entries: int | None  # executions of the block at its symbol's address: its calls (None: a whole file)
    cycles: float | None = None  # estimated by a cycle model (board/cycle_model.py), when one was given


class _Functions:
    """The function symbols of one mapped ELF file, looked up by address."""

    def __init__(self, path: str, base: int, nearest: bool):
        from c2f_edge.backend.bundle_file import symbols

        try:
            data = Path(path).read_bytes()
            syms = symbols(data)
            if struct.unpack_from("<H", data, 16)[0] == 2:  # ET_EXEC: its symbols are absolute addresses
                base = 0
        except (OSError, C2FError, struct.error, ValueError, IndexError):
            syms = []
        self.base, self.nearest = base, nearest
        self.funcs = sorted({(s.value, s.size, s.name) for s in syms if s.is_function and s.value})
        self.starts = np.array([f[0] for f in self.funcs], np.int64)

    def lookup(self, addr: int) -> tuple[str | None, bool]:
        """(the function at `addr`, whether `addr` is its entry)."""
        off = addr - self.base
        i = int(np.searchsorted(self.starts, off, side="right")) - 1
        if i < 0:
            return None, False
        value, size, name = self.funcs[i]
        if not self.nearest and off >= value + size:
            return None, False
        return name, off == value


def by_symbol(profile: Profile, maps: str, library: Path, cycles: np.ndarray | None = None) -> list[Function]:
    """Instructions per function, most first. Functions of `library` go by their names; those of other
    mapped files (the runtime, libc, Python) as FILE:NAME, or FILE where no symbol covers the code. Symbols
    are placed where the guest's /proc/self/maps says each file was loaded. In `library`, code without a
    symbol of its own (the parallel-loop bodies LLVM emits after the kernel they belong to) counts for the
    function before it. `cycles`: a cycle model's estimate per execution of each block, summed per function."""
    lib = str(Path(library).resolve())
    ranges, bases = [], {}  # (start, end, file) of every mapped file; each file's load address
    for line in maps.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) < 6:
            continue
        start, end = (int(v, 16) for v in parts[0].split("-"))
        ranges.append((start, end, parts[5]))
        if int(parts[2], 16) == 0:
            bases[parts[5]] = min(start, bases.get(parts[5], start))
    tables: dict[str, _Functions] = {}
    cls, _ = classify(profile.words)
    block = np.repeat(np.arange(len(profile.address)), np.diff(profile.starts))
    per_block = np.zeros((len(profile.address), len(CLASSES)), np.int64)  # instructions of each class, once
    np.add.at(per_block, (block, cls), 1)
    names, entries = [], {}
    for addr, execs in zip(profile.address.tolist(), profile.executions.tolist(), strict=True):
        path = next((f for s, e, f in ranges if s <= addr < e), None)
        name = "[unmapped]" if path is None else Path(path).name
        if path in bases:
            if path not in tables:
                tables[path] = _Functions(path, bases[path], nearest=path == lib)
            func, entry = tables[path].lookup(addr)
            if func is not None:
                name = func if path == lib else f"{name}:{func}"
                # A block may be translated more than once: add their entries up.
                entries[name] = entries.get(name, 0) + (execs if entry else 0)
        names.append(name)
    order = {n: i for i, n in enumerate(sorted(set(names)))}
    index = np.array([order[n] for n in names], np.int64)
    totals = np.zeros((len(order), len(CLASSES)), np.int64)
    np.add.at(totals, index, per_block * profile.executions.astype(np.int64)[:, None])
    spent = None
    if cycles is not None:
        spent = np.zeros(len(order))
        np.add.at(spent, index, cycles * profile.executions.astype(np.float64))
    out = [Function(n, int(totals[i].sum()), {c: int(totals[i, j]) for j, c in enumerate(CLASSES)}, entries.get(n),
                    None if spent is None else float(spent[i]))
           for n, i in order.items()]
    return sorted(out, key=lambda f: (-f.instructions, f.name))


# What an aarch64 Linux kernel shows in /proc/cpuinfo for each emulated core (one CPU: counts run one thread).
# Runtimes such as ONNX Runtime read it at import (the host's x86 one crashes them). Part, variant and
# revision are those of the MIDR that qemu 7.2 reports for the core; the features, the real core's.
_V8_0 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 cpuid"
_V8_2 = "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp"
CPUINFO = {
    "cortex-a76": ("0x4", "0xd0b", "1", _V8_2),
    "neoverse-n1": ("0x4", "0xd0c", "1", _V8_2),
    "cortex-a72": ("0x0", "0xd08", "3", _V8_0),
    "cortex-a57": ("0x1", "0xd07", "0", _V8_0),
    "cortex-a53": ("0x0", "0xd03", "4", _V8_0),
    "cortex-a35": ("0x1", "0xd04", "0", _V8_0),
}


def emulated_core(target: str | None, mcpu: str | None, cpu: str | None) -> str:
    """The core to emulate for a target: `cpu` if given, else the target's mcpu (or its stand-in)."""
    if cpu is None:
        if mcpu not in CPUINFO and cycle_model.STAND_INS.get(mcpu) in CPUINFO:  # Orin's A78AE: not in qemu 7.2
            return cycle_model.STAND_INS[mcpu]
        if mcpu not in CPUINFO:
            raise UsageError(f"the {target} target names no core that qemu emulates (mcpu {mcpu or 'not set'})",
                             hint=f"pass --cpu, one of {', '.join(CPUINFO)} (cortex-a76: Raspberry Pi 5, "
                                  "cortex-a72: Pi 4)")
        return mcpu
    if cpu not in CPUINFO:
        raise UsageError(f"--cpu {cpu!r} is not a core c2f-edge emulates", hint=f"one of {', '.join(CPUINFO)}")
    return cpu


def prefix(rootfs: Path, cpu: str) -> Path:
    """A qemu -L prefix for `cpu`: the emulated board's rootfs, plus a /proc/cpuinfo of that core."""
    if cpu not in CPUINFO:
        raise ToolchainError(f"no /proc/cpuinfo for {cpu!r}", hint=f"one of {', '.join(CPUINFO)}")
    variant, part, revision, features = CPUINFO[cpu]
    d = cache_dir("insn-count") / f"prefix-{cpu}"
    (d / "proc").mkdir(parents=True, exist_ok=True)
    for entry in rootfs.iterdir():
        link = d / entry.name
        if entry.name != "proc" and not link.is_symlink():
            link.symlink_to(entry)
    (d / "proc" / "cpuinfo").write_text(
        f"processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
        f"CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {revision}\n\n")
    return d


@dataclass
class Count:
    output: np.ndarray
    summary: dict  # summarize()'s
    functions: list[Function]  # by_symbol()'s, with estimated cycles where the core has a cycle model
    profile: Profile
    estimate: dict | None  # cycle_model.estimate()'s, where the core has a model


def run_guest(script: Path, args: list[str], out: Path, cpu: str, timeout: float,
              split: bool = False) -> subprocess.CompletedProcess:
    """`script` with `args` in the emulated board's Python on `cpu`, one thread, under the counting plugin
    writing to `out`. subprocess.TimeoutExpired after `timeout` s: each caller says what took too long."""
    from c2f_edge.board import emulator

    emu = emulator.setup(quiet=True)
    root = prefix(emu.rootfs, cpu)
    env = emu.env({"TVM_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "QEMU_LD_PREFIX": str(root)})
    return subprocess.run(command([str(emu.python), str(script), *args], out, cpu=cpu, rootfs=root, split=split),
                          env=env, capture_output=True, text=True, timeout=timeout, check=False)


def count_run(runtime: str, model: Path, x: np.ndarray, cpu: str, work: Path, library: Path,
              timeout: float = 3600) -> Count:
    """One inference by `runtime` ("tvm": a bundle's model.so, "onnxruntime": an ONNX file) on the emulated
    `cpu`, one thread, after a warm-up: its output, instruction classes and instructions per function of
    `library` (and per other mapped file)."""
    work.mkdir(parents=True, exist_ok=True)
    np.save(work / "input.npy", np.ascontiguousarray(x, np.float32))
    files = [work / name for name in ("output.npy", "maps.txt", "profile.bin")]
    for f in files:
        f.unlink(missing_ok=True)
    args = [runtime, str(Path(model).resolve()), str(work / "input.npy"), str(files[0]), str(files[1]), hex(START),
            hex(STOP)]
    try:
        proc = run_guest(GUEST, args, files[2], cpu, timeout)
    except subprocess.TimeoutExpired:
        raise ToolchainError(f"{runtime} ran longer than {timeout:g} s on the emulated {cpu}",
                             hint="raise --timeout: emulation is slow (Conv2Former-N takes about a minute)") from None
    if proc.returncode:
        if "Illegal instruction" in proc.stderr or proc.returncode == -4:
            raise ToolchainError(f"{runtime} ran an instruction the emulated {cpu} does not have",
                                 hint="count on the core the code was compiled for (a bundle's target mcpu)")
        raise ToolchainError(f"{runtime} failed on the emulated {cpu}: {first_line(RuntimeError(proc.stderr))}",
                             hint="for tvm, check that the bundle was compiled for an aarch64 target")
    profile = read_profile(files[2])
    if profile.regions != 1:
        raise ArtifactError(f"the run closed {profile.regions} counted regions, not 1", hint="")
    model = cycle_model.CORES.get(cpu)  # the core emulated is the core estimated: no stand-ins here
    cycles = cycle_model.block_cycles(profile, model) if model else None
    return Count(np.load(files[0]), summarize(profile), by_symbol(profile, files[1].read_text(), library, cycles),
                 profile, cycle_model.estimate(profile, model) if model else None)


def count_bundle(bundle_dir: str | Path, x: np.ndarray, cpu: str, work: Path, timeout: float = 3600) -> Count:
    so = Path(bundle_dir).resolve() / "model.so"
    return count_run("tvm", so, x, cpu, work, so, timeout=timeout)


def count_onnxruntime(onnx: str | Path, x: np.ndarray, cpu: str, work: Path) -> Count:
    """ONNX Runtime's aarch64 wheel (the emulated board's) on the ONNX file, ORT_ENABLE_ALL, sequential."""
    from c2f_edge.board import emulator

    capi = emulator.emulator_dir() / "site-packages" / "onnxruntime" / "capi"
    library = next(iter(sorted(capi.glob("onnxruntime_pybind11_state*.so"))), capi / "onnxruntime_pybind11_state.so")
    return count_run("onnxruntime", Path(onnx), x, cpu, work, library)


def count_ncnn(model: str | Path, x: np.ndarray, cpu: str, work: Path, fp32: bool = False) -> Count:
    """ncnn's aarch64 wheel (the emulated board's) on an ncnn model (`model`.param and .bin, input in0, output
    out0): its default options, or every fp16/bf16/int8 option off (`fp32`)."""
    from c2f_edge.board import emulator

    lib_dir = emulator.emulator_dir() / "site-packages" / "ncnn"
    library = next(iter(sorted(lib_dir.glob("ncnn*.so"))), lib_dir / "ncnn.so")
    return count_run("ncnn_fp32" if fp32 else "ncnn", Path(model), x, cpu, work, library)


def setup() -> Path:
    """Fetch the header and build the plugin now (make setup-system), not inside a test or a benchmark."""
    return plugin(fetch=True)


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m c2f_edge.board.insn_count",
                                description="Build the instruction-counting qemu plugin, or summarize a profile.")
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser("setup", help="fetch qemu's plugin header and build the plugin (cached)")
    s = sub.add_parser("summary", help="instructions per class of a profile the plugin wrote")
    s.add_argument("profile")
    a = p.parse_args(argv)
    try:
        if a.action == "setup":
            print(f"instruction-count plugin: {setup()}")
        else:
            print(json.dumps(summarize(read_profile(a.profile)), indent=2))
    except C2FError as e:
        return report(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
