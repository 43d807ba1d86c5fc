"""Count many compiled kernels in one qemu run, each apart, and estimate their cycles: how an emulated tuning
run scores its candidates (tune/emulated.py). qemu and the guest's TVM start once per batch, not once per
kernel (under emulation that start-up costs seconds, a small kernel milliseconds).

Each kernel runs once to warm up and once between markers, on one thread, with random arguments of its
shapes (board/kernel_guest.py); the plugin writes each counted call to its own file (split mode).
"""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from c2f_edge.board import cycle_model, insn_count
from c2f_edge.board.block_profile import Profile
from c2f_edge.core.errors import ToolchainError, first_line

GUEST = Path(__file__).with_name("kernel_guest.py")


@dataclass
class KernelCount:
    profile: Profile | None  # None: the kernel failed (error says why)
    instructions: int | None
    cycles: float | None  # by the core's cycle model; None without one
    error: str | None


PYTHON_SIDE = re.compile(r"/python3[.\d]*$|\.cpython-[^/]*\.so$|/libffi\.so[.\d]*$")


def without_python(profile: Profile, maps: str) -> Profile:
    """The profile without the blocks of the Python interpreter and its extension modules: the guest's calls
    into a kernel go through them, and what they run varies a little from call to call (the allocator,
    dictionaries), while the kernel, the TVM runtime and libc code it calls do not."""
    spans = []
    for line in maps.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and PYTHON_SIDE.search(parts[5]):
            spans.append(tuple(int(v, 16) for v in parts[0].split("-")))
    keep = np.array([not any(s <= a < e for s, e in spans) for a in profile.address.tolist()], bool)
    sizes = np.diff(profile.starts)
    words = np.concatenate([profile.words[profile.starts[i]:profile.starts[i + 1]] for i in np.flatnonzero(keep)]) \
        if keep.any() else np.zeros(0, np.uint32)
    starts = np.concatenate([[0], np.cumsum(sizes[keep])]).astype(np.int64)
    return Profile(profile.regions, profile.address[keep], profile.executions[keep], words.astype(np.uint32), starts)


def count_kernels(jobs: list[dict], cpu: str, work: Path, timeout: float = 600) -> list[KernelCount]:
    """One KernelCount per job ({"path": .so built for aarch64, "args": [["TENSOR", dtype, shape], ...]}),
    in order. A kernel that fails gets its error; qemu or the guest failing as a whole raises ToolchainError."""
    work.mkdir(parents=True, exist_ok=True)
    jobs_file, results_file, out = work / "jobs.json", work / "results.jsonl", work / "profile.bin"
    for f in [results_file, out, *work.glob("profile.bin.*")]:
        f.unlink(missing_ok=True)
    jobs_file.write_text(json.dumps([{"path": str(Path(j["path"]).resolve()), "args": j["args"]} for j in jobs]))
    args = [str(jobs_file), str(results_file), hex(insn_count.START), hex(insn_count.STOP)]
    try:
        proc = insn_count.run_guest(GUEST, args, out, cpu, timeout, split=True)
    except subprocess.TimeoutExpired:
        raise ToolchainError(f"counting {len(jobs)} kernels on the emulated {cpu} took over {timeout:g} s",
                             hint="use smaller batches (fewer trials per round)") from None
    lines = results_file.read_text().splitlines() if results_file.is_file() else []
    if proc.returncode or len(lines) != len(jobs):
        raise ToolchainError(f"the kernel batch stopped on the emulated {cpu} after {len(lines)} of {len(jobs)} "
                             f"kernels: {first_line(RuntimeError(proc.stderr or 'no output'))}",
                             hint="a kernel that crashes the process (not one that raises) stops its batch")
    model = cycle_model.CORES.get(cpu)
    counts = []
    for line in lines:
        r = json.loads(line)
        if r["region"] is None:
            counts.append(KernelCount(None, None, None, r["error"]))
            continue
        p = without_python(insn_count.read_profile(f"{out}.{r['region']}"), r["maps"])
        cycles = cycle_model.estimate(p, model)["cycles"] if model else None
        counts.append(KernelCount(p, insn_count.summarize(p)["instructions"], cycles, None))
    return counts
