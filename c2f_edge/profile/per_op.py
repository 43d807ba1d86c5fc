"""Per-kernel time breakdown of a Relax bundle, measured on the board.

TVM 0.27 has no `VirtualMachine.profile`, and its instrument hook (`vm.set_instrument`) takes a
function that must live on the board, which a stock RPC server cannot receive. So:

1. trace (on this machine): replay the bundle's VM bytecode with every kernel skipped, recording each
   kernel call and its argument shapes/dtypes (backend.kernel_trace). This works for bundles built
   for another CPU: no kernel is executed here.
2. time (on the board): load the kernel library view of the same .so (`bundle_file.kernel_library`) and
   time each distinct kernel with TVM's time evaluator, on random arguments of the traced shapes.

A kernel's total is its time per call x its number of calls. Kernels run in isolation here, with warm
caches, so their sum is usually below the end-to-end latency; both are reported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from c2f_edge.backend.kernel_trace import KernelCall

# Per-kernel timing: a repeat lasts at least this long (number grows for tiny kernels), median of REPEAT.
KERNEL_MIN_REPEAT_MS = 10
KERNEL_REPEAT = 3


@dataclass
class KernelTiming:
    name: str
    signature: str
    calls: int
    ms_per_call: float | None
    error: str | None = None
    samples_ms: list[float] = field(default_factory=list)

    @property
    def total_ms(self) -> float | None:
        return None if self.ms_per_call is None else self.ms_per_call * self.calls


def group_calls(calls: list[KernelCall]) -> list[tuple[KernelCall, int]]:
    """Distinct (kernel, argument signature) with their call counts, in first-call order."""
    seen: dict[tuple[str, str], list] = {}
    for c in calls:
        key = (c.name, c.signature())
        if key in seen:
            seen[key][1] += 1
        else:
            seen[key] = [c, 1]
    return [(c, n) for c, n in seen.values()]


def _random_arg(spec: dict, dev, rng):
    import tvm

    if "scalar" in spec:
        return spec["scalar"]
    dtype = spec["dtype"]
    if dtype.startswith(("float", "bfloat")):
        # Real-valued data: all-zero or uninitialized memory (NaN, denormals) can time differently.
        a = rng.standard_normal(spec["shape"]).astype("float32" if dtype == "bfloat16" else dtype)
    else:
        a = np.zeros(spec["shape"], dtype=dtype)
    return tvm.runtime.tensor(a, dev)


def time_kernel(lib, dev, call: KernelCall, rng, repeat: int = KERNEL_REPEAT,
                min_repeat_ms: int = KERNEL_MIN_REPEAT_MS) -> list[float]:
    """Per-call times (ms) of one kernel of a (remote) kernel library, `repeat` samples."""
    args = [_random_arg(a, dev, rng) for a in call.args]
    f = lib.time_evaluator(call.name, dev, number=1, repeat=repeat, min_repeat_ms=min_repeat_ms)
    return [r * 1000.0 for r in f(*args).results]


def breakdown(timings: list[KernelTiming], end_to_end_ms: float | None) -> dict:
    """Rows sorted by total time with their share of the kernel sum, plus kernel-sum vs end-to-end."""
    measured = [t for t in timings if t.total_ms is not None]
    kernel_sum = sum(t.total_ms for t in measured)
    rows = []
    for t in sorted(timings, key=lambda t: -(t.total_ms or -1.0)):
        rows.append({
            "kernel": t.name, "calls": t.calls, "signature": t.signature,
            "ms_per_call": None if t.ms_per_call is None else round(t.ms_per_call, 5),
            "total_ms": None if t.total_ms is None else round(t.total_ms, 5),
            "share": None if t.total_ms is None or kernel_sum <= 0 else round(t.total_ms / kernel_sum, 6),
            "error": t.error,
        })
    return {
        "rows": rows,
        "kernel_sum_ms": round(kernel_sum, 4),
        "end_to_end_ms": end_to_end_ms,
        "kernel_sum_over_end_to_end": (round(kernel_sum / end_to_end_ms, 4) if end_to_end_ms else None),
        "kernels_measured": len(measured),
        "kernels_failed": len(timings) - len(measured),
        "calls": sum(t.calls for t in timings),
    }
