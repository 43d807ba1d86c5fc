"""Markdown summaries of profile results, and the side-by-side comparison of several results."""

from __future__ import annotations

import json
from pathlib import Path

from c2f_edge.core.errors import ArtifactError

SCHEMA_DOC = """\
profile JSON (schema 1), as written by `c2f-edge profile --json PATH`:
  schema            1 (bumped on incompatible changes)
  kind              "c2f-edge.profile"
  complete          false if the board dropped or timed out: what was measured is kept
  error             null, or {type, message, hint, stage}
  conditions        date; board {key, connection, address, emulated, emulated_note}; cpu {model, board,
                    cores, source, note}; device {type, attributes}; threads {requested, affinity, used,
                    note}; tvm {client, client_ffi, remote, remote_note}; artifact {path, sha256, bytes,
                    target, target_json, tuning, tuning_log, variant, input}; settings {warmup, repeat,
                    number, min_repeat_ms, cooldown_ms, threads, affinity, per_op, timeout}; client;
                    rpc_roundtrip_ms
  latency_ms        {min, p50, p90, p99, mean, std, samples, cold_start}   (milliseconds)
  throughput_ips    images/s at the mean latency (batch / mean)
  timing_method     "board" (TVM time evaluator on the board) or "client" (runs >= 1 s, timed around the call)
  samples_ms        every sample (each the mean of `number` runs)
  warmup_ms, load   warm-up call times; {upload_s, load_s}
  per_op            [{kernel, calls, signature, ms_per_call, total_ms, share, error; local runs also
                    in_model_ms, in_model_calls}], by total_ms
  per_op_summary    {kernel_sum_ms, end_to_end_ms (p50), kernel_sum_over_end_to_end, kernels_measured,
                    kernels_failed, calls, kernels_planned, calls_planned, complete, error, method,
                    in_model: null (boards), {error}, or {kernel_sum_ms, kernel_calls, builtins_ms, builtin_calls,
                    run_ms, runs, method} (local runs: every call timed in the model's own sequence)}
  notes             caveats that apply to these numbers

instruction counts JSON (schema 1), as written by `c2f-edge profile --emulated --json PATH` without a board:
  kind              "c2f-edge.profile.counts"
  conditions        date, cpu (the emulated core), threads (1), emulator, input, artifact {path, sha256,
                    target, tuning, variant}, versions
  instructions      one inference, after a warm-up; classes {fma_f32x4, fma_f32x2, fma_f16x8, fma_f16x4,
                    fma_f64x2, neon_other, neon_load, neon_store, fp_scalar, load, store, branch, other}
  fma_lanes         FMA instructions x their lanes; model_macs, fma_lanes_per_mac (null without the ONNX file)
  neon_load_bytes, neon_store_bytes
  estimate          null (no cycle model for the core), or {board, clock_ghz, cycles, ms, bound_by {resource:
                    cycles}, note}: the cycle model's ESTIMATE (board/cycle_model.py), not a measurement
  per_op            with --per-op: [{kernel, calls_counted, calls_traced, signature, instructions, classes,
                    fma_lanes, per_call, share, cycles_est, ms_est}], by instructions
  outside_kernels   with --per-op: [{function, instructions, calls, cycles_est}]: FILE:SYMBOL, or FILE
  notes             caveats: counts, not times
"""


def _f(x, nd: int = 2) -> str:
    return "n/a" if x is None else f"{x:,.{nd}f}"


def load_result(path: str | Path) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"no profile result at {p}", hint="write one with `c2f-edge profile ... --json PATH`")
    try:
        d = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{p} is not valid JSON ({e.msg})", hint="re-run the profile") from e
    if d.get("kind") == "c2f-edge.profile.counts" and "instructions" in d:
        return d
    if d.get("kind") != "c2f-edge.profile" or "latency_ms" not in d:
        raise ArtifactError(f"{p} is not a c2f-edge profile result", hint="pass files written by `profile --json`")
    return d


def label(result: dict) -> str:
    c = result["conditions"]
    a = c["artifact"]
    emu = " EMULATED" if c["board"]["emulated"] else ""
    split = " split" if a.get("split_reduction") else ""  # other kernels than --no-split-reduction's
    return f"{a.get('target')} {a.get('tuning') or ''}{split} @ {c['board']['key']}{emu}".replace("  ", " ")


def _distinct(names: list[str], results: list[dict]) -> list[str]:
    """Column names that tell results apart: the bundle's hash where labels repeat, then the run's number."""
    if len(set(names)) < len(names):
        names = [f"{n} {r['conditions']['artifact']['sha256'][:8]}" for n, r in zip(names, results, strict=True)]
    if len(set(names)) < len(names):
        names = [f"{n} #{i}" for i, n in enumerate(names, 1)]
    return names


def markdown(result: dict, top: int = 15) -> str:
    c, lat = result["conditions"], result["latency_ms"]
    a, b = c["artifact"], c["board"]
    lines = []
    status = "complete" if result["complete"] else "INCOMPLETE"
    lines.append(f"## Profile: {a.get('target')} bundle ({a.get('tuning') or 'tuning unknown'}) on "
                 f"{b['key']} ({status})")
    lines.append("")
    if b["emulated"]:
        lines.append(f"> **{b['emulated_note']}**")
        lines.append("")
    if result.get("error"):
        e = result["error"]
        lines.append(f"> **error** during {e.get('stage')}: {e.get('message')}")
        lines.append("")
    unit = "emulated ms" if b["emulated"] else "ms"
    lines.append(f"| statistic | {unit} |")
    lines.append("|---|---:|")
    for k in ("min", "p50", "p90", "p99", "mean", "std"):
        lines.append(f"| {k} | {_f(lat[k], 3)} |")
    lines.append(f"| cold start (first run) | {_f(lat['cold_start'], 3)} |")
    lines.append(f"| samples | {lat['samples']} |")
    thr = result.get("throughput_ips")
    lines.append(f"| throughput | {_f(thr, 2)} images/s{' (emulated)' if b['emulated'] else ''} |")
    lines.append("")
    cpu = c.get("cpu") or {}
    th = c.get("threads") or {}
    tvm = c["tvm"]
    lines.append("Conditions:")
    lines.append(f"- board: key `{b['key']}` via {b['connection']} ({b['address']})"
                 f"{', **emulated**' if b['emulated'] else ''}")
    lines.append(f"- CPU: {cpu.get('model') or 'model not exposed'}"
                 f"{(', board ' + cpu['board']) if cpu.get('board') else ''}; cores: "
                 f"{cpu.get('cores') if cpu.get('cores') is not None else 'not exposed'}"
                 f"{('  (' + cpu['note'] + ')') if cpu.get('note') else ''}")
    lines.append(f"- threads: {th.get('used') if th.get('used') is not None else 'unknown'} used"
                 f" (requested: {th.get('requested') or 'default'}"
                 f"{', affinity ' + th['affinity'] if th.get('affinity') else ''})"
                 f"{'  **' + th['note'] + '**' if th.get('requested') and th.get('note') else ''}")
    lines.append(f"- device: {c['device']['type']}")
    lines.append(f"- TVM: client {tvm['client']} (ffi {tvm['client_ffi']}), board "
                 f"{tvm['remote'] or 'unknown (' + (tvm.get('remote_note') or '') + ')'}")
    lines.append(f"- artifact: {a['path']} sha256 {a['sha256'][:16]}…, target {a.get('target')}, "
                 f"{a.get('tuning')}")
    s = c["settings"]
    lines.append(f"- settings: warmup {s['warmup']}, repeat {s['repeat']}, number {s['number']}, "
                 f"min_repeat_ms {s['min_repeat_ms']}, cooldown_ms {s['cooldown_ms']}, timeout {s['timeout']}s")
    if c.get("rpc_roundtrip_ms") is not None:
        lines.append(f"- RPC round trip: {c['rpc_roundtrip_ms']:.3f} ms")
    lines.append(f"- date: {c['date']}")
    if result.get("per_op_summary"):
        lines.append("")
        lines.extend(per_op_table(result, top))
    if result.get("notes"):
        lines.append("")
        lines.extend(f"Note: {n}" for n in result["notes"] if n and "EMULATED" not in n)
    return "\n".join(lines) + "\n"


def per_op_table(result: dict, top: int = 15) -> list[str]:
    summ, rows = result["per_op_summary"], result["per_op"]
    im = summ.get("in_model")
    im_error = im.get("error") if im else None
    im = None if im_error else im
    emu = " (emulated)" if result["conditions"]["board"]["emulated"] else ""
    title = (f"Per-kernel breakdown{emu}: {summ['kernels_measured']} kernels, {summ['calls']} calls"
             f"{'' if summ['complete'] else ' (INCOMPLETE)'}")
    head, rule = "| # | kernel | calls | ms/call | total ms | share |", "|---:|---|---:|---:|---:|---:|"
    if im:
        head, rule = head + " in model ms | x alone |", rule + "---:|---:|"
    out = [title, "", head, rule]
    for i, r in enumerate(rows[:top], 1):
        if r["total_ms"] is None:
            out.append(f"| {i} | {r['kernel']} | {r['calls']} | failed | | {r['error'] or ''} |")
            continue
        line = (f"| {i} | {r['kernel']} | {r['calls']} | {_f(r['ms_per_call'], 4)} | "
                f"{_f(r['total_ms'], 3)} | {r['share'] * 100:.1f}% |")
        if im:
            ms = r.get("in_model_ms")
            # a ratio of microsecond kernels is the clock's noise
            ratio = ms / r["total_ms"] if ms is not None and min(ms, r["total_ms"]) >= 0.01 else None
            line += f" {_f(ms, 3)} | {_f(ratio, 2)} |"
        out.append(line)
    rest = [r for r in rows[top:] if r["total_ms"] is not None]
    if rest:
        line = (f"| | ({len(rest)} more) | {sum(r['calls'] for r in rest)} | | "
                f"{_f(sum(r['total_ms'] for r in rest), 3)} | {sum(r['share'] for r in rest) * 100:.1f}% |")
        if im:
            line += f" {_f(sum(r.get('in_model_ms') or 0.0 for r in rest), 3)} | |"
        out.append(line)
    out.append("")
    if summ.get("error"):
        out.append(f"Per-kernel breakdown failed: {summ['error']}")
    ratio = summ.get("kernel_sum_over_end_to_end")
    out.append(f"Kernel sum {_f(summ['kernel_sum_ms'], 3)} ms vs end-to-end p50 {_f(summ['end_to_end_ms'], 3)} ms"
               f" (ratio {_f(ratio, 2)}): kernels timed alone run with warm caches; the rest is VM overhead, "
               "memory traffic between kernels and builtins.")
    if im:
        rest_ms = im["run_ms"] - im["kernel_sum_ms"] - im["builtins_ms"]
        out.append(f"In the model's own sequence (median of {im['runs']} instrumented runs of {_f(im['run_ms'], 3)} "
                   f"ms): kernels {_f(im['kernel_sum_ms'], 3)} ms, VM builtins {_f(im['builtins_ms'], 3)} ms "
                   f"({im['builtin_calls']} calls), between calls {_f(rest_ms, 3)} ms. A kernel's `x alone` above 1 "
                   "is what the caches, as the kernels before it left them, cost it.")
    if im_error:
        out.append(f"Timing the kernels in the model's own sequence failed: {im_error}")
    if summ["kernels_failed"]:
        out.append(f"{summ['kernels_failed']} kernel(s) could not be timed alone (see `error` in the JSON).")
    return out


def compare(results: list[dict], names: list[str] | None = None) -> str:
    """Side-by-side table; ratios are relative to the first result (>1 = slower than it)."""
    counted = [r.get("kind") == "c2f-edge.profile.counts" for r in results]
    if any(counted):
        if not all(counted):
            raise ArtifactError("--compare got both latencies and instruction counts", hint="compare results of "
                                "one kind: all from `profile --emulated` alone, or all from boards")
        from c2f_edge.profile.counts import compare as compare_counts

        return compare_counts(results)
    names = names or _distinct([label(r) for r in results], results)
    base = results[0]["latency_ms"]
    head = "| metric | " + " | ".join(names) + " |"
    lines = ["## Profile comparison (ratios vs the first column)", ""]
    if any(r["conditions"]["board"]["emulated"] for r in results):
        lines += ["> columns marked EMULATED are emulator timings, NOT device latencies", ""]
    lines += [head, "|---|" + "---:|" * len(results)]
    for k in ("min", "p50", "p90", "p99", "mean", "std", "cold_start"):
        cells = []
        for i, r in enumerate(results):
            v = r["latency_ms"][k]
            cell = f"{_f(v, 3)} ms"
            if i and v is not None and base[k]:
                cell += f" ({v / base[k]:.2f}x)"
            cells.append(cell)
        lines.append(f"| {k} | " + " | ".join(cells) + " |")
    thr = [r.get("throughput_ips") for r in results]
    cells = [f"{_f(t, 2)}" + (f" ({t / thr[0]:.2f}x)" if i and t and thr[0] else "") for i, t in enumerate(thr)]
    lines.append("| throughput (img/s) | " + " | ".join(cells) + " |")
    lines.append("| samples | " + " | ".join(str(r["latency_ms"]["samples"]) for r in results) + " |")
    lines.append("| complete | " + " | ".join("yes" if r["complete"] else "NO" for r in results) + " |")
    sums = [r.get("per_op_summary") or {} for r in results]
    for metric, get in (("kernel sum, alone", lambda s: s.get("kernel_sum_ms")),
                        ("kernels in the model", lambda s: (s.get("in_model") or {}).get("kernel_sum_ms"))):
        vals = [get(s) for s in sums]
        if vals[0] is None or all(v is None for v in vals[1:]):
            continue
        cells = [f"{_f(v, 3)} ms" + (f" ({v / vals[0]:.2f}x)" if i and v is not None and vals[0] else "")
                 for i, v in enumerate(vals)]
        lines.append(f"| {metric} | " + " | ".join(cells) + " |")
    for field, get in (("target", lambda r: r["conditions"]["artifact"].get("target")),
                       ("tuning", lambda r: r["conditions"]["artifact"].get("tuning")),
                       ("board", lambda r: r["conditions"]["board"]["key"]
                        + (" (EMULATED)" if r["conditions"]["board"]["emulated"] else "")),
                       ("threads", lambda r: (r["conditions"].get("threads") or {}).get("used")),
                       ("sha256", lambda r: r["conditions"]["artifact"]["sha256"][:12]),
                       ("date", lambda r: r["conditions"]["date"])):
        lines.append(f"| {field} | " + " | ".join(str(get(r)) for r in results) + " |")
    with_ops = [r for r in results if r.get("per_op_summary")]
    if len(with_ops) == len(results) and len(results) > 1:
        lines += ["", "Top kernels (total ms per inference):", ""]
        lines += ["| kernel | " + " | ".join(names) + " |", "|---|" + "---:|" * len(results)]
        first = results[0]["per_op"]
        by_name = [{row["kernel"]: row for row in r["per_op"]} for r in results]
        for row in first[:10]:
            cells = []
            for i, m in enumerate(by_name):
                other = m.get(row["kernel"])
                t = other["total_ms"] if other else None
                cell = _f(t, 3)
                if i and t is not None and row["total_ms"]:
                    cell += f" ({t / row['total_ms']:.2f}x)"
                cells.append(cell)
            lines.append(f"| {row['kernel']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def fleet_markdown(fleet: dict) -> str:
    """Every board of a fleet side by side; ratios are to the fleet's median p50, outliers flagged."""
    results, addrs = fleet["boards"], fleet["addresses"]
    median, ratio = fleet["median_p50_ms"], fleet["outlier_ratio"]
    key = results[0]["conditions"]["board"]["key"] if results else "?"
    lines = [f"## Fleet: {len(results)} board(s) under key {key!r}", ""]
    if any(r["conditions"]["board"]["emulated"] for r in results):
        lines += ["> EMULATED boards: emulator timings, NOT device latencies", ""]
    lines += ["| metric | " + " | ".join(addrs) + " |", "|---|" + "---:|" * len(addrs)]
    for k in ("min", "p50", "p90", "p99", "mean", "std", "cold_start"):
        lines.append(f"| {k} | " + " | ".join(f"{_f(r['latency_ms'][k], 3)} ms" for r in results) + " |")
    cells = [f"{r['latency_ms']['p50'] / median:.2f}x" if median and r["latency_ms"]["p50"] else "n/a"
             for r in results]
    lines.append("| p50 / fleet median | " + " | ".join(cells) + " |")
    lines.append("| throughput (img/s) | " + " | ".join(_f(r.get("throughput_ips"), 2) for r in results) + " |")
    lines.append("| samples | " + " | ".join(str(r["latency_ms"]["samples"]) for r in results) + " |")
    lines.append("| complete | " + " | ".join("yes" if r["complete"] else "NO" for r in results) + " |")
    lines.append("| threads | " + " | ".join(str((r["conditions"].get("threads") or {}).get("used"))
                                             for r in results) + " |")
    lines.append("| cpu | " + " | ".join(str((r["conditions"].get("cpu") or {}).get("model") or "n/a")
                                         for r in results) + " |")
    lines.append("")
    lines.append(f"fleet median p50: {_f(median, 3)} ms; an outlier is a board above {ratio:g}x it")
    for a in fleet["outliers"]:
        r = results[addrs.index(a)]
        lines.append(f"OUTLIER: {a}: p50 {_f(r['latency_ms']['p50'], 3)} ms = "
                     f"{r['latency_ms']['p50'] / median:.2f}x the fleet median (throttling? another OS image?)")
    for a in fleet["incomplete"]:
        err = results[addrs.index(a)].get("error") or {}
        lines.append(f"INCOMPLETE: {a}: {err.get('message', 'the run did not finish')}")
    if not fleet["outliers"] and not fleet["incomplete"]:
        lines.append("no outliers")
    return "\n".join(lines) + "\n"
