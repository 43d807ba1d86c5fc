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


def test_all_boards_profiles_each_board_and_flags_the_delayed_one(tiny_bundle, fleet, rpc_tracker, tmp_path, capsys):
    addresses, slow = fleet
    out = tmp_path / "fleet.json"
    rc = cli(["profile", "--artifact", str(tiny_bundle), "--rpc-tracker", rpc_tracker.address, "--rpc-key", "fleet",
              "--all-boards", "--repeat", "5", "--warmup", "1", "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    d = json.loads(out.read_text())
    assert d["kind"] == "c2f-edge.profile-fleet" and d["addresses"] == sorted(addresses)
    # one result per board, each in the single-board schema, each from the board it names
    assert [r["conditions"]["board"]["server"] for r in d["boards"]] == sorted(addresses)
    assert all(r["kind"] == "c2f-edge.profile" and r["complete"] and r["latency_ms"]["samples"] == 5
               for r in d["boards"])
    assert d["outliers"] == [slow]
    slow_p50 = d["boards"][d["addresses"].index(slow)]["latency_ms"]["p50"]
    assert slow_p50 >= 50 and slow_p50 > 1.2 * d["median_p50_ms"]  # the 50 ms stand-in delay shows
    assert f"OUTLIER: {slow}" in text and "| p50 / fleet median |" in text
    assert all(a in text.splitlines()[2] for a in addresses)  # one column per board
