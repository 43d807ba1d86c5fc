"""Instructions a bundle runs on an emulated ARM core, counted exactly (board.insn_count), in all and per kernel.

`c2f-edge profile --emulated` without a board runs one inference, after a warm-up, on one thread of a core
that qemu emulates on this machine, and counts only that inference. Counts do not depend on the host and
are exact; they are not times (a scalar load and a 128-bit FMA count one each), and are labelled so.

Per kernel: the bundle's kernels are the functions `__tvm_ffi_<kernel>` (the packed wrapper, entered once
per call) and `<kernel>_compute_` (the body, with its parallel-loop code); both count for <kernel>. The
kernel calls traced from the VM bytecode (backend.kernel_trace) give the argument shapes and the calls
expected, which the counted entries must match.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from c2f_edge.board.cycle_model import STAND_INS
from c2f_edge.board.insn_count import emulated_core
from c2f_edge.core.artifacts import now_iso, sha256_file, tool_versions
from c2f_edge.core.errors import ArtifactError, UsageError

SCHEMA = 1
KIND = "c2f-edge.profile.counts"
COUNTS_NOTE = ("EMULATED core (qemu on this machine): these are instruction COUNTS of one inference, exact and "
               "the same on any host, NOT times; a scalar load and a 128-bit FMA count one each")
ESTIMATE_NOTE = ("ESTIMATE, not a measurement: a throughput bound of the core's pipes (board/cycle_model.py) at "
                 "its board's clock, one thread; blind to caches and memory bandwidth, dependency latency, branch "
                 "mispredictions and multi-thread scaling, so real times are higher")
WRAPPER, BODY = "__tvm_ffi_", "_compute_"
SHOWN = (("fma_f32x4", "FMA f32x4"), ("fma_f16x8", "FMA f16x8"), ("neon_other", "NEON other"),
         ("neon_load", "NEON ld"), ("neon_store", "NEON st"), ("fp_scalar", "scalar FP"), ("load", "loads"),
         ("store", "stores"), ("branch", "branches"))


@dataclass
class CountConfig:
    artifact: str
    cpu: str | None = None  # default: the target's mcpu
    per_op: bool = False
    timeout: float = 3600.0
    seed: int = 0


def emulated_cpu(manifest: dict, cpu: str | None) -> str:
    """The core to emulate: `cpu`, or the one the bundle's target was compiled for."""
    target = manifest.get("target") or {}
    mcpu = (target.get("json") or {}).get("mcpu") or (target.get("resolved") or {}).get("mcpu")  # a tag: resolved
    return emulated_core(target.get("name"), mcpu, cpu)


def _bundle(artifact: str) -> tuple[dict, Path]:
    from c2f_edge.backend.crosslink import elf_arch
    from c2f_edge.compile.bundle import LIBRARY, read_bundle_manifest

    d = Path(artifact)
    if not d.is_dir():
        raise ArtifactError(f"no bundle directory at {d}", hint="run `c2f-edge compile --target rpi5` first, "
                                                                "or pass --artifact build/<target>")
    m = read_bundle_manifest(d)  # checks model.so against the manifest's sha256
    device = (m.get("runtime") or {}).get("device", "cpu")
    arch = elf_arch(d / LIBRARY)
    if device != "cpu" or arch != "aarch64":
        what = f"a {device} bundle" if device != "cpu" else f"a bundle for {arch}"
        raise UsageError(f"{d} is {what} ({(m.get('target') or {}).get('name')}): instructions are counted on an "
                         "emulated aarch64 CPU", hint="compile for an aarch64 CPU target, e.g. "
                                                      "`c2f-edge compile --target rpi5`")
    if not (m.get("input") or {}).get("shape"):
        raise ArtifactError(f"{d}/manifest.json has no input shape", hint="re-run `c2f-edge compile`")
    return m, d / LIBRARY


def _row(name: str, traced: dict) -> dict:
    from c2f_edge.board.insn_count import CLASSES

    return {"kernel": name, "instructions": 0, "classes": dict.fromkeys(CLASSES, 0), "cycles_est": None,
            "calls_traced": traced["calls"], "calls_counted": 0, "signature": "; ".join(traced["signatures"])}


def kernel_rows(functions: list, calls: list) -> tuple[list[dict], list[dict]]:
    """(one row per kernel, one per function outside the kernels), by instructions. `functions` are
    insn_count.by_symbol()'s, `calls` the traced kernel calls."""
    from c2f_edge.board.insn_count import FMA_LANES

    traced: dict[str, dict] = {}
    for c in calls:
        t = traced.setdefault(c.name, {"calls": 0, "signatures": []})
        t["calls"] += 1
        if c.signature() not in t["signatures"]:
            t["signatures"].append(c.signature())
    kernels: dict[str, dict] = {}
    outside = []
    for f in functions:
        name = f.name
        if name.startswith(WRAPPER):
            name = name[len(WRAPPER):]
        elif name.endswith(BODY):
            name = name[:-len(BODY)]
        if name not in traced:
            outside.append({"function": f.name, "instructions": f.instructions, "calls": f.entries,
                            "cycles_est": f.cycles})
            continue
        k = kernels.setdefault(name, _row(name, traced[name]))
        k["instructions"] += f.instructions
        if f.cycles is not None:
            k["cycles_est"] = (k["cycles_est"] or 0.0) + f.cycles
        for c, n in f.classes.items():
            k["classes"][c] += n
        if f.name.startswith(WRAPPER):
            k["calls_counted"] += f.entries or 0
    for name, t in traced.items():  # a kernel that ran no counted instruction still gets its row
        kernels.setdefault(name, _row(name, t))
    rows = sorted(kernels.values(), key=lambda k: (-k["instructions"], k["kernel"]))
    for k in rows:
        k["fma_lanes"] = sum(k["classes"][c] * lanes for c, lanes in FMA_LANES.items())
        k["per_call"] = k["instructions"] // k["calls_counted"] if k["calls_counted"] else None
    return rows, outside


def count(cfg: CountConfig, work: Path | None = None) -> dict:
    """Count one inference of the bundle on the emulated core. Returns the result dict (markdown() prints it)."""
    import tempfile

    from c2f_edge.backend import bundle_file, kernel_trace
    from c2f_edge.board import insn_count

    m, lib = _bundle(cfg.artifact)
    cpu = emulated_cpu(m, cfg.cpu)
    inp = m["input"]
    x = np.random.default_rng(cfg.seed).standard_normal(inp["shape"]).astype(inp.get("dtype", "float32"))
    with tempfile.TemporaryDirectory(prefix="c2f-count-") as tmp:
        c = insn_count.count_bundle(Path(cfg.artifact), x, cpu, Path(work or tmp), timeout=cfg.timeout)
    if not np.isfinite(c.output).all():
        raise ArtifactError(f"the bundle's output on the emulated {cpu} is not finite",
                            hint="check the bundle with `c2f-edge parity` against PyTorch")
    s = c.summary
    result = {
        "schema": SCHEMA, "kind": KIND, "complete": True,
        "conditions": {
            "date": now_iso(), "cpu": cpu, "threads": 1, "emulator": insn_count.QEMU,
            "input": f"np.random.default_rng({cfg.seed}).standard_normal({inp['shape']}), {x.dtype}",
            "artifact": {"path": str(Path(cfg.artifact)), "sha256": sha256_file(lib),
                         "target": (m.get("target") or {}).get("name"),
                         "tuning": (m.get("tuning") or {}).get("status"),
                         "split_reduction": bool((m.get("config") or {}).get("split_reduction")),
                         "variant": (m.get("onnx") or {}).get("variant")},
            "versions": {k: tool_versions().get(k) for k in ("c2f-edge", "apache-tvm")},
        },
        "instructions": s["instructions"], "classes": s["classes"], "fma_lanes": s["fma_lanes"],
        "neon_load_bytes": s["neon_load_bytes"], "neon_store_bytes": s["neon_store_bytes"],
        "per_op": None, "outside_kernels": None,
        "notes": [COUNTS_NOTE, "one thread, one inference after a warm-up, counted between marker syscalls"],
    }
    est = c.estimate
    result["estimate"] = None if est is None else {**{k: est[k] for k in ("board", "clock_ghz", "cycles", "ms",
                                                                         "bound_by")}, "note": ESTIMATE_NOTE}
    if est is None:
        result["notes"].append(f"no cycle model for the {cpu}: counts only, no time estimate")
    mcpu = ((m.get("target") or {}).get("json") or {}).get("mcpu")
    if mcpu and STAND_INS.get(mcpu) == cpu:
        result["notes"].append(f"the target's {mcpu} is emulated and estimated as a {cpu} (its stand-in), at the "
                               f"{cpu}'s board clock")
    elif mcpu and mcpu != cpu:
        result["notes"].append(f"counted on {cpu}, a core the bundle was not compiled for ({mcpu})")
    macs = _model_macs(m)
    result["model_macs"] = macs
    result["fma_lanes_per_mac"] = s["fma_lanes"] / macs if macs else None
    if cfg.per_op:
        calls = kernel_trace.trace_kernel_calls(bundle_file.vm_executable_bytes(lib), inp["shape"],
                                                inp.get("dtype", "float32"))
        rows, outside = kernel_rows(c.functions, calls)
        for r in rows:
            r["share"] = r["instructions"] / s["instructions"] if s["instructions"] else None
            r["ms_est"] = None if est is None or r["cycles_est"] is None else r["cycles_est"] / (est["clock_ghz"] * 1e6)
        result["per_op"], result["outside_kernels"] = rows, outside
        result["notes"].append("per kernel: its wrapper and body; outside the kernels: the VM, the runtime and "
                               "Python between the calls")
    return result


def _model_macs(m: dict) -> int | None:
    """Multiply-accumulates of the ONNX file the bundle was compiled from, if it is still there and the same."""
    from c2f_edge.core.onnx_file import count_macs, load_onnx

    onnx = m.get("onnx") or {}
    path = Path(onnx.get("path") or "")
    if not path.is_file() or (onnx.get("sha256") and sha256_file(path) != onnx["sha256"]):
        return None
    return count_macs(load_onnx(path))


def markdown(result: dict, top: int = 15) -> str:
    a = result["conditions"]["artifact"]
    m = 1e6
    title = (f"## Instruction counts: {a.get('target')} bundle ({a.get('tuning') or 'tuning unknown'}) on an "
             f"emulated {result['conditions']['cpu']}")
    lines = [title, "", f"> **{COUNTS_NOTE}**", "", "| count | millions |", "|---|---:|",
             f"| instructions | {result['instructions'] / m:,.2f} |"]
    lines += [f"| {label} | {result['classes'][c] / m:,.2f} |" for c, label in SHOWN]
    lines.append(f"| FMA lanes | {result['fma_lanes'] / m:,.2f} |")
    if result.get("fma_lanes_per_mac") is not None:
        lines.append(f"| FMA lanes per model MAC | {result['fma_lanes_per_mac']:.2f} |")
    est = result.get("estimate")
    if est:
        bound = max(est["bound_by"], key=est["bound_by"].get)
        line = (f"**Estimated {est['ms']:,.2f} ms** on a {est['board']} ({est['clock_ghz']:g} GHz), "
                f"{est['cycles'] / m:,.1f} M cycles, most bound by {bound}. {est['note']}.")
        lines += ["", line]
    rows = result.get("per_op")
    if rows:
        lines += ["", f"### Per kernel (top {min(top, len(rows))} of {len(rows)}, by instructions)", "",
                  "| kernel | calls | instructions (M) | share | per call | NEON FMA share | est. ms | |",
                  "|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in rows[:top]:
            fma = sum(v for c, v in r["classes"].items() if c.startswith("fma_"))
            bar = "#" * round(20 * (r["share"] or 0))
            ms = "-" if r.get("ms_est") is None else f"{r['ms_est']:,.2f}"
            lines.append(f"| {r['kernel']} | {r['calls_counted']} | {r['instructions'] / m:,.3f} | "
                         f"{100 * (r['share'] or 0):.1f}% | {r['per_call'] or 0:,} | "
                         f"{100 * fma / r['instructions'] if r['instructions'] else 0:.0f}% | {ms} | {bar} |")
        inside = sum(r["instructions"] for r in rows)
        total = result["instructions"]
        summary = (f"kernels: {inside / m:,.2f} M ({100 * inside / total:.1f}%); outside them (the VM, the "
                   f"runtime, Python): {(total - inside) / m:,.2f} M, most in:")
        lines += ["", summary, ""]
        lines += [f"- {f['instructions'] / m:,.3f} M ({100 * f['instructions'] / total:.1f}%) {f['function']}"
                  for f in result["outside_kernels"][:5]]
        odd = [r["kernel"] for r in rows if r["calls_counted"] != r["calls_traced"]]
        if odd:
            lines.append(f"calls counted differ from the VM's trace for: {', '.join(odd)}")
    return "\n".join(lines) + "\n"


def compare(results: list[dict]) -> str:
    """Count results side by side; ratios are relative to the first (>1 = more instructions than it)."""
    names = [f"{r['conditions']['artifact'].get('target')} {r['conditions']['artifact'].get('tuning') or ''} "
             f"@ {r['conditions']['cpu']}".replace("  ", " ") for r in results]
    lines = ["## Instruction counts compared (millions; ratios vs the first column)", "", f"> {COUNTS_NOTE}", "",
             "| count | " + " | ".join(names) + " |", "|---|" + "---:|" * len(results)]

    def line(label: str, values: list) -> str:
        first = values[0]
        cells = [f"{v / 1e6:,.2f}" + (f" ({v / first:.2f}x)" if i and first else "") for i, v in enumerate(values)]
        return f"| {label} | " + " | ".join(cells) + " |"

    lines.append(line("instructions", [r["instructions"] for r in results]))
    lines += [line(label, [r["classes"][c] for r in results]) for c, label in SHOWN]
    lines.append(line("FMA lanes", [r["fma_lanes"] for r in results]))
    if all(r.get("per_op") for r in results):
        by_name = [{row["kernel"]: row for row in r["per_op"]} for r in results]
        lines += ["", "Top kernels (millions of instructions per inference):", "",
                  "| kernel | " + " | ".join(names) + " |", "|---|" + "---:|" * len(results)]
        for row in results[0]["per_op"][:10]:
            vals = [m[row["kernel"]]["instructions"] if row["kernel"] in m else None for m in by_name]
            cells = ["n/a" if v is None else f"{v / 1e6:,.3f}" + (f" ({v / vals[0]:.2f}x)" if i and vals[0] else "")
                     for i, v in enumerate(vals)]
            lines.append(f"| {row['kernel']} | " + " | ".join(cells) + " |")
    lines.append("| sha256 | " + " | ".join(r["conditions"]["artifact"]["sha256"][:12] for r in results) + " |")
    return "\n".join(lines) + "\n"
