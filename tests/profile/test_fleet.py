"""`profile --all-boards`: every board under a key, side by side, the slow one flagged."""

from __future__ import annotations

import json

from c2f_edge.cli import main as cli
from c2f_edge.profile import fleet as fleet_mod


def _result(p50, complete=True):
    return {"complete": complete, "latency_ms": {"p50": p50}}


def test_outliers_are_boards_above_the_ratio_of_the_median():
    res = {"a:1": _result(10.0), "b:1": _result(10.5), "c:1": _result(12.7), "d:1": _result(None, complete=False)}
    s = fleet_mod.summarize(res)
    assert s["median_p50_ms"] == 10.5 and s["outliers"] == ["c:1"] and s["incomplete"] == ["d:1"]
    assert fleet_mod.summarize({"a:1": _result(10.0), "b:1": _result(12.0)})["outliers"] == []  # 12 < 1.2 x 11


def test_boards_that_share_a_host_take_turns_and_other_hosts_run_together():
    rounds = fleet_mod._rounds(["10.0.0.5:9090", "127.0.0.1:9001", "127.0.0.1:9002", "10.0.0.6:9090",
                                "127.0.0.1:9003"])
    assert rounds == [["10.0.0.5:9090", "127.0.0.1:9001", "10.0.0.6:9090"], ["127.0.0.1:9002"], ["127.0.0.1:9003"]]


def _timed_profiles(monkeypatch) -> list[tuple[str, float, float]]:
    """Record (board, start, end) of each single-board profile run that the fleet starts."""
    import time

    from c2f_edge.profile import runner

    real, runs = runner.profile, []

    def profile(cfg):
        start = time.monotonic()
        r = real(cfg)
        runs.append((r["conditions"]["board"]["server"], start, time.monotonic()))
        return r

    monkeypatch.setattr(runner, "profile", profile)
    return runs


def _overlap(a: tuple[str, float, float], b: tuple[str, float, float]) -> bool:
    return a[1] < b[2] and b[1] < a[2]


def test_all_boards_profiles_each_board_and_flags_the_delayed_one(tiny_bundle, fleet, tmp_path, capsys, monkeypatch):
    """Three boards on two hosts (network namespaces, so the tracker sees two addresses): the two that share
    host 1 take turns, and host 2's board is profiled while one of them is."""
    runs = _timed_profiles(monkeypatch)
    out = tmp_path / "fleet.json"
    rc = cli(["profile", "--artifact", str(tiny_bundle), "--rpc-tracker", fleet.tracker.address, "--rpc-key", "fleet",
              "--all-boards", "--repeat", "5", "--warmup", "1", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    d = json.loads(out.read_text())
    assert d["kind"] == "c2f-edge.profile-fleet" and d["addresses"] == sorted(fleet.addresses)
    # one result per board, each in the single-board schema, each from the board it names
    assert [r["conditions"]["board"]["server"] for r in d["boards"]] == sorted(fleet.addresses)
    assert all(r["kind"] == "c2f-edge.profile" and r["complete"] and r["latency_ms"]["samples"] == 5
               for r in d["boards"])
    assert d["outliers"] == [fleet.slow]
    slow_p50 = d["boards"][d["addresses"].index(fleet.slow)]["latency_ms"]["p50"]
    assert slow_p50 >= 50 and slow_p50 > 1.2 * d["median_p50_ms"]  # the 50 ms stand-in delay shows
    assert f"OUTLIER: {fleet.slow}" in text and "| p50 / fleet median |" in text
    assert all(a in text.splitlines()[2] for a in fleet.addresses)  # one column per board
    assert sorted(r[0] for r in runs) == sorted(fleet.addresses), runs
    host1 = [r for r in runs if fleet.hosts[r[0]] == "c2f-test-1"]
    host2 = [r for r in runs if fleet.hosts[r[0]] == "c2f-test-2"]
    assert len(host1) == 2 and not _overlap(*host1), runs  # a shared host: one board at a time
    assert any(_overlap(host2[0], r) for r in host1), runs  # other hosts: at the same time


def test_an_exception_in_one_boards_thread_reaches_the_caller_and_frees_every_board(tiny_bundle, fleet, monkeypatch):
    """One of the parallel profile runs fails with an error of its own (not a board's): profile_fleet
    raises it instead of returning the others' results, and releases every board it held."""
    import pytest

    from c2f_edge.profile import ProfileConfig, runner

    real, calls = runner.profile, []

    def profile(cfg):
        calls.append(1)
        if len(calls) == 2:
            raise ValueError("a bug in one profile thread")
        return real(cfg)

    monkeypatch.setattr(runner, "profile", profile)
    cfg = ProfileConfig(str(tiny_bundle), mode="tracker", tracker=fleet.tracker.address, key="fleet", repeat=3,
                        warmup=1, timeout=30)
    with pytest.raises(ValueError, match="a bug in one profile thread"):
        fleet_mod.profile_fleet(cfg)
    assert len(calls) >= 2
    held = fleet_mod._reserve(cfg, len(fleet.addresses))  # all free again: none is held by a leftover session
    assert sorted(held) == sorted(fleet.addresses)


def test_a_board_lost_mid_profile_leaves_the_fleet_incomplete_and_exits_3(tiny_bundle, rpc_tracker, tmp_path,
                                                                          capsys):
    """Two boards on one host, so they take turns; the first one's turn is stopped while it is timed. The
    other's turn still comes (no board of the lost one's round is left to hold again), its result is
    complete, the JSON is written with the lost board listed as incomplete, and the command ends with one
    line and exit code 3."""
    from c2f_edge.board import rpc
    from tests.fixtures.boards import stop_in_session

    key, out = "fleet-lost", tmp_path / "fleet.json"
    servers = sorted((rpc.start_host_server(tracker=rpc_tracker, key=key) for _ in range(2)),
                     key=lambda s: s.address)  # the fleet's order of turns
    try:
        # Sessions: the fleet's idle hold of every board, then its profile run, stopped 1 s into it.
        stop_in_session(servers[0], 2, after_s=1.0)
        rc = cli(["profile", "--artifact", str(tiny_bundle), "--rpc-tracker", rpc_tracker.address, "--rpc-key", key,
                  "--all-boards", "--repeat", "2000", "--warmup", "1", "--timeout", "20", "--json", str(out)])
    finally:
        for s in servers:
            s.stop()
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 3, err
    assert len(errors) == 1 and "1 of 2 board(s) did not finish" in errors[0] and servers[0].address in errors[0]
    d = json.loads(out.read_text())
    assert d["incomplete"] == [servers[0].address]
    assert [r["complete"] for r in d["boards"]] == [a != servers[0].address for a in d["addresses"]]
