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

3. in the model (local runs only): the whole model runs with the VM's instrument hook, which stamps the
   clock before and after every call, so each kernel is also timed where it runs, with the caches as the
   kernels before it left them. Its excess over the time alone is what memory traffic between kernels
   costs it; what the kernels do not cover is the VM's builtins (allocation) and its own dispatch. The
   hook is a Python function, which a remote VM cannot take: boards get the isolated times only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from c2f_edge.backend.kernel_trace import KernelCall

# Per-kernel timing: a repeat lasts at least this long (number grows for tiny kernels), median of REPEAT.
KERNEL_MIN_REPEAT_MS = 10
KERNEL_REPEAT = 3
# Instrumented whole-model runs (after one untimed): each call's median over these is its time in the model.
IN_MODEL_RUNS = 10


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


def time_in_model(library: str, kernels: set[str], shape, dtype: str, function: str, rng,
                  runs: int = IN_MODEL_RUNS) -> dict:
    """Every call of one model run timed in sequence on this CPU: {"kernels": {name: {"ms", "calls"}},
    "builtins_ms", "builtin_calls", "run_ms", "runs"}; ms are per inference, medians per call over `runs`."""
    import time

    import tvm
    from tvm.runtime.vm import VirtualMachine

    dev = tvm.cpu()
    vm = VirtualMachine(tvm.runtime.load_module(library), dev)
    x = tvm.runtime.tensor(rng.standard_normal(shape).astype(dtype), dev)
    started: list[float] = []  # a stack: a call may make calls of its own
    calls: list[tuple[str, float]] = []

    def hook(_func, symbol, before, _ret, *_args):
        now = time.perf_counter()
        if before:
            started.append(now)
        else:
            calls.append((symbol, now - started.pop()))
        return 0  # VMInstrumentReturnKind.NoOp: run the call

    vm.set_instrument(hook)
    per_run, walls = [], []
    for i in range(runs + 1):
        calls.clear()
        t0 = time.perf_counter()
        vm[function](x)
        wall = time.perf_counter() - t0
        if i:  # the first run pays for first touches
            per_run.append([t for _, t in calls])
            walls.append(wall)
    symbols = [s for s, _ in calls]
    if any(len(r) != len(symbols) for r in per_run):
        raise RuntimeError("the model's runs made different calls; cannot time them call by call")
    medians = np.median(np.array(per_run), axis=0) * 1000.0
    out: dict[str, dict] = {}
    builtins_ms, builtin_calls = 0.0, 0
    for symbol, ms in zip(symbols, medians, strict=True):
        if symbol in kernels:
            k = out.setdefault(symbol, {"ms": 0.0, "calls": 0})
            k["ms"] += float(ms)
            k["calls"] += 1
        else:
            builtins_ms += float(ms)
            builtin_calls += 1
    return {"kernels": {k: {"ms": round(v["ms"], 5), "calls": v["calls"]} for k, v in out.items()},
            "builtins_ms": round(builtins_ms, 5), "builtin_calls": builtin_calls,
            "run_ms": round(float(np.median(walls)) * 1000.0, 5), "runs": runs}


def breakdown(timings: list[KernelTiming], end_to_end_ms: float | None, in_model: dict | None = None) -> dict:
    """Rows sorted by total time with their share of the kernel sum, plus kernel-sum vs end-to-end.
    in_model (time_in_model's result) adds each kernel's time in the model's own sequence."""
    measured = [t for t in timings if t.total_ms is not None]
    kernel_sum = sum(t.total_ms for t in measured)
    failed = in_model.get("error") if in_model else None
    in_model = None if failed else in_model
    seen = in_model["kernels"] if in_model else {}
    names = [t.name for t in timings]
    rows = []
    for t in sorted(timings, key=lambda t: -(t.total_ms or -1.0)):
        row = {
            "kernel": t.name, "calls": t.calls, "signature": t.signature,
            "ms_per_call": None if t.ms_per_call is None else round(t.ms_per_call, 5),
            "total_ms": None if t.total_ms is None else round(t.total_ms, 5),
            "share": None if t.total_ms is None or kernel_sum <= 0 else round(t.total_ms / kernel_sum, 6),
            "error": t.error,
        }
        if in_model:  # a name with two signatures cannot be split between its rows
            one = names.count(t.name) == 1 and t.name in seen
            row["in_model_ms"] = seen[t.name]["ms"] if one else None
            row["in_model_calls"] = seen[t.name]["calls"] if one else None
        rows.append(row)
    summary = {
        "rows": rows,
        "kernel_sum_ms": round(kernel_sum, 4),
        "end_to_end_ms": end_to_end_ms,
        "kernel_sum_over_end_to_end": (round(kernel_sum / end_to_end_ms, 4) if end_to_end_ms else None),
        "kernels_measured": len(measured),
        "kernels_failed": len(timings) - len(measured),
        "calls": sum(t.calls for t in timings),
        "in_model": {"error": failed} if failed else None,
    }
    if in_model:
        summary["in_model"] = {
            "kernel_sum_ms": round(sum(k["ms"] for k in seen.values()), 4),
            "kernel_calls": sum(k["calls"] for k in seen.values()),
            **{k: in_model[k] for k in ("builtins_ms", "builtin_calls", "run_ms", "runs")},
            "method": "the whole model run with the VM's instrument hook (this machine only), the clock read "
                      "before and after every call; per call the median over the runs, summed per kernel",
        }
    return summary
