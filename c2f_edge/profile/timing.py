"""Latency statistics and how to split the timed repeats into short chunks."""

from __future__ import annotations

import math

import numpy as np

# One chunk (one remote time_evaluator call) should take about this long, so a board that drops
# costs at most one chunk of samples and progress is reported often.
CHUNK_TARGET_S = 5.0


def latency_stats(samples_ms: list[float], cold_start_ms: float | None = None) -> dict:
    """min/p50/p90/p99/mean/std over per-sample latencies (ms). Percentiles interpolate linearly."""
    out = {"min": None, "p50": None, "p90": None, "p99": None, "mean": None, "std": None,
           "samples": len(samples_ms), "cold_start": _round(cold_start_ms)}
    if samples_ms:
        a = np.asarray(samples_ms, dtype=np.float64)
        p50, p90, p99 = np.percentile(a, [50, 90, 99])
        out.update(min=_round(a.min()), p50=_round(p50), p90=_round(p90), p99=_round(p99),
                   mean=_round(a.mean()), std=_round(a.std(ddof=1) if a.size > 1 else 0.0))
    return out


def throughput_ips(mean_ms: float | None, batch: int) -> float | None:
    """Images per second at the measured mean latency (one request at a time)."""
    if not mean_ms or mean_ms <= 0:
        return None
    return float(f"{1000.0 * batch / mean_ms:.4g}")  # 4 significant digits: slow boards give < 1 img/s


def chunk_sizes(repeat: int, est_ms: float, number: int, timeout_s: float, cooldown_ms: float = 0.0,
                target_s: float = CHUNK_TARGET_S) -> list[int]:
    """Split `repeat` samples into chunks that each take about `target_s` (at most a third of the timeout).

    Each chunk is one remote time_evaluator call, which also runs one untimed call first.
    """
    if repeat <= 0:
        return []
    budget_s = max(0.05, min(target_s, timeout_s / 3.0))
    per_sample_s = (max(est_ms, 1e-3) * max(number, 1) + max(cooldown_ms, 0.0)) / 1000.0
    size = max(1, min(repeat, int(budget_s / per_sample_s)))
    n = math.ceil(repeat / size)
    return [size] * (n - 1) + [repeat - size * (n - 1)]


def _round(x, nd: int = 4):
    return None if x is None else round(float(x), nd)
