"""Profile every board under one tracker key: a fleet, side by side, with its outliers flagged.

A team's boards are not all alike: one throttles, one runs another OS image. Each board is profiled
with the same settings (one `profile()` run each, so every result has the single-board schema), then
compared with the fleet's median p50.

Boards on different hosts are profiled in parallel; boards that share a host (several servers on one
machine) one after another, so they do not slow each other down. The tracker picks the board for a
request, so the others are held: this process reserves every board (one idle session each) and frees
only the ones whose turn it is.
"""

from __future__ import annotations

import gc
import statistics
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

from c2f_edge.core.errors import RemoteError

KIND = "c2f-edge.profile-fleet"
# A board whose p50 is more than this times the fleet's median p50 is an outlier.
OUTLIER_RATIO = 1.2


def _at_once(fn, n: int) -> list:
    """fn(0) ... fn(n-1) in parallel threads; their results in order, or the first exception, raised here."""
    if n == 0:  # e.g. holding again a round's boards when every one of them was lost
        return []
    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(fn, range(n)))


def _reserve(cfg, n: int) -> dict[str, object]:
    """n sessions at once, each on another free board: {board HOST:PORT: session}."""
    from c2f_edge.board import rpc

    return dict(_at_once(lambda _: rpc.reserve(cfg.tracker, cfg.key, timeout=min(cfg.timeout, 30),
                                               wait=cfg.timeout), n))


def _rounds(boards: list[str]) -> list[list[str]]:
    """Boards grouped into rounds: one board of each host per round."""
    by_host: dict[str, list[str]] = defaultdict(list)
    for b in boards:
        by_host[b.rpartition(":")[0]].append(b)
    depth = max(len(v) for v in by_host.values())
    return [[v[i] for v in by_host.values() if i < len(v)] for i in range(depth)]


def _profile_at_once(cfg, n: int) -> dict[str, dict]:
    """n profile runs in parallel, each on the free board the tracker gives it: {board: result}."""
    from c2f_edge.profile.runner import profile

    results = _at_once(lambda _: profile(replace(cfg)), n)
    return {r["conditions"]["board"].get("server") or f"unknown-{i}": r for i, r in enumerate(results)}


def profile_fleet(cfg, on_board=None) -> dict:
    """Profile every board registered under cfg.key at cfg.tracker (cfg: a tracker-mode ProfileConfig).
    on_board(addr, result) is called as each board finishes."""
    from c2f_edge.board import rpc

    boards = rpc.boards(cfg.tracker, cfg.key)
    if not boards:
        raise RemoteError(f"no board is registered under key {cfg.key!r} at tracker {cfg.tracker}",
                          hint="start the boards' RPC servers with --tracker and that --key")
    held = _reserve(cfg, len(boards))
    results: dict[str, dict] = {}
    try:
        for turn in _rounds(sorted(held)):
            for addr in turn:  # free this round's boards: the runs below get exactly those
                del held[addr]
            gc.collect()  # a freed session may linger in a reference cycle and keep its board
            runs = _profile_at_once(cfg, len(turn))
            for addr, r in sorted(runs.items()):
                results[addr] = r
                if on_board:
                    on_board(addr, r)
            if len(results) < len(boards):  # hold this round's boards again while the others take their turn
                alive = set(rpc.boards(cfg.tracker, cfg.key))
                held.update(_reserve(cfg, sum(a in alive for a in turn)))
    finally:
        held.clear()
        gc.collect()
    return summarize(results)


def summarize(results: dict[str, dict], ratio: float = OUTLIER_RATIO) -> dict:
    """The fleet result: every board's own result, the median p50, and the boards above ratio x it."""
    p50 = {a: r["latency_ms"]["p50"] for a, r in results.items() if r["complete"] and r["latency_ms"]["p50"]}
    median = statistics.median(p50.values()) if p50 else None
    outliers = sorted(a for a, v in p50.items() if median and v > ratio * median)
    return {"kind": KIND, "boards": [results[a] for a in sorted(results)], "addresses": sorted(results),
            "median_p50_ms": median, "outlier_ratio": ratio, "outliers": outliers,
            "incomplete": sorted(a for a, r in results.items() if not r["complete"])}
