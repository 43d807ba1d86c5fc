"""Statistics and chunk planning (no TVM)."""

import numpy as np
import pytest

from c2f_edge.profile.timing import chunk_sizes, latency_stats, throughput_ips


def test_latency_stats_match_numpy():
    rng = np.random.default_rng(1)
    samples = list(rng.gamma(4.0, 3.0, size=200))
    s = latency_stats(samples, cold_start_ms=123.4)
    a = np.asarray(samples)
    assert s["samples"] == 200
    assert s["cold_start"] == pytest.approx(123.4)
    assert s["min"] == pytest.approx(a.min(), abs=1e-4)
    assert s["mean"] == pytest.approx(a.mean(), abs=1e-4)
    assert s["std"] == pytest.approx(a.std(ddof=1), abs=1e-4)
    for key, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        assert s[key] == pytest.approx(np.percentile(a, q), abs=1e-4)
    assert s["min"] <= s["p50"] <= s["p90"] <= s["p99"] <= a.max()


def test_latency_stats_empty_and_single():
    empty = latency_stats([])
    assert empty["samples"] == 0 and empty["p50"] is None and empty["cold_start"] is None
    one = latency_stats([5.0])
    assert one["min"] == one["p99"] == 5.0 and one["std"] == 0.0


def test_throughput():
    assert throughput_ips(100.0, 1) == pytest.approx(10.0)
    assert throughput_ips(100.0, 4) == pytest.approx(40.0)
    assert throughput_ips(None, 1) is None


@pytest.mark.parametrize("repeat,est_ms,number,timeout,cooldown", [
    (30, 2.0, 1, 300, 0), (30, 9000.0, 1, 300, 0), (7, 400.0, 3, 300, 0), (100, 2.0, 1, 6, 50), (1, 1.0, 1, 1, 0),
])
def test_chunks_cover_repeat_and_stay_short(repeat, est_ms, number, timeout, cooldown):
    chunks = chunk_sizes(repeat, est_ms, number, timeout, cooldown)
    assert sum(chunks) == repeat and all(c >= 1 for c in chunks)
    per_sample_s = (est_ms * number + cooldown) / 1000
    budget = min(5.0, timeout / 3)
    # a chunk longer than the budget only when a single sample already is
    assert all(c == 1 or c * per_sample_s <= budget + 1e-9 for c in chunks)
