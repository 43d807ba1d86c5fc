"""`c2f-edge profile` against real RPC services on 127.0.0.1: statistics, per-kernel breakdown, plots,
the emulated board, and boards that drop or hang mid-run."""

from __future__ import annotations

import json
import os
import signal
import struct
import threading
import time

import numpy as np
import pytest

from c2f_edge.cli import main as cli

STAT_KEYS = ("min", "p50", "p90", "p99", "mean", "std", "samples", "cold_start")


def _check_result(d: dict, samples: int) -> None:
    assert d["schema"] == 1 and d["kind"] == "c2f-edge.profile"
    assert d["complete"] is True and d["error"] is None
    lat = d["latency_ms"]
    assert set(STAT_KEYS) <= set(lat)
    assert lat["samples"] == samples == len(d["samples_ms"])
    assert all(lat[k] is not None and lat[k] >= 0 for k in STAT_KEYS)
    assert lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= max(d["samples_ms"]) + 1e-6
    assert lat["cold_start"] > 0
    assert d["throughput_ips"] == pytest.approx(1000.0 / lat["mean"], rel=1e-3)
    c = d["conditions"]
    for key in ("date", "board", "cpu", "threads", "tvm", "artifact", "settings"):
        assert c[key] is not None, key
    assert c["tvm"]["client"] and c["artifact"]["sha256"] and c["artifact"]["tuning"]
    assert c["threads"]["used"] >= 1


def _check_per_op(d: dict) -> None:
    rows, summ = d["per_op"], d["per_op_summary"]
    assert rows and summ["complete"] and summ["kernels_failed"] == 0
    assert sum(r["share"] for r in rows) == pytest.approx(1.0, abs=1e-3)
    totals = [r["total_ms"] for r in rows]
    assert totals == sorted(totals, reverse=True)
    assert summ["kernel_sum_ms"] == pytest.approx(sum(totals), rel=1e-3)
    assert summ["calls"] == summ["calls_planned"] == sum(r["calls"] for r in rows)
    assert summ["end_to_end_ms"] == d["latency_ms"]["p50"]


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()[:32]
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


# The plot's colours (c2f_edge/profile/plot.py): histogram bars, kernel bars, the EMULATED/INCOMPLETE title.
HISTOGRAM, KERNELS, WARNING = (0x4C, 0x72, 0xB0), (0xDD, 0x84, 0x52), (0xB2, 0x22, 0x22)


def _drawn(path, rgb, half: str = "all") -> int:
    """Pixels of the PNG (its left 40% or right half, or all) within a few levels of an RGB colour.
    The latency panel takes the left ~43% of the figure, the kernel panel the rest."""
    import matplotlib.image

    img = (matplotlib.image.imread(str(path))[..., :3] * 255).round()
    w = img.shape[1]
    img = {"left": img[:, : w * 2 // 5], "right": img[:, w // 2:], "all": img}[half]
    return int((np.abs(img - np.array(rgb)).max(axis=-1) <= 3).sum())


@pytest.fixture(scope="module")
def tiny_local_run(tiny_bundle, tmp_path_factory):
    """One in-process profile of the tiny bundle with --per-op and --plot, shared by the tests below."""
    import contextlib
    import io

    d = tmp_path_factory.mktemp("tiny-local")
    out, png, md = d / "r.json", d / "r.png", io.StringIO()
    with contextlib.redirect_stdout(md):
        rc = cli(["profile", "--artifact", str(tiny_bundle), "--local", "--warmup", "1", "--repeat", "12",
                  "--threads", "1", "--per-op", "--json", str(out), "--plot", str(png)])
    return rc, md.getvalue(), out, png


def test_tiny_local_with_per_op_and_plot(tiny_local_run):
    rc, md, out, png = tiny_local_run
    assert rc == 0
    d = json.loads(out.read_text())
    _check_result(d, 12)
    _check_per_op(d)
    # conv-gelu-conv-gelu-mean-matmul-add: 7 kernel calls, and a convolution dominates
    assert d["per_op_summary"]["calls"] == 7
    assert "conv2d" in d["per_op"][0]["kernel"]
    assert d["conditions"]["board"]["emulated"] is False and "EMULATED" not in md
    assert "| p99 |" in md and "Per-kernel breakdown" in md
    w, h = _png_size(png)
    assert w >= 800 and h >= 400
    # a histogram on the left, the kernel bars on the right, and no warning-red title
    assert _drawn(png, HISTOGRAM, "left") > 2000 and _drawn(png, HISTOGRAM, "right") == 0
    assert _drawn(png, KERNELS, "right") > 2000 and _drawn(png, KERNELS, "left") == 0
    assert _drawn(png, WARNING) == 0


def test_local_per_op_times_every_call_in_the_models_own_sequence(tiny_local_run):
    """The hook's count of each kernel's calls must match the bytecode trace's, independently made."""
    _, md, out, _ = tiny_local_run
    d = json.loads(out.read_text())
    rows, im = d["per_op"], d["per_op_summary"]["in_model"]
    assert im["runs"] >= 5 and im["kernel_calls"] == d["per_op_summary"]["calls"] == 7
    assert all(r["in_model_calls"] == r["calls"] and r["in_model_ms"] > 0 for r in rows)
    assert im["kernel_sum_ms"] == pytest.approx(sum(r["in_model_ms"] for r in rows), abs=1e-3)
    assert im["builtin_calls"] > 0  # the VM allocates storage and tensors between kernels
    assert im["kernel_sum_ms"] + im["builtins_ms"] <= im["run_ms"]
    assert "| in model ms | x alone |" in md and "In the model's own sequence" in md


def test_calls_of_functions_that_are_not_kernels_count_as_builtins(tiny_bundle):
    from c2f_edge.profile.per_op import time_in_model

    r = time_in_model(str(tiny_bundle / "model.so"), {"gelu"}, [1, 3, 32, 32], "float32", "main",
                      np.random.default_rng(0), runs=2)
    assert set(r["kernels"]) == {"gelu"} and r["kernels"]["gelu"]["calls"] == 2
    everything = time_in_model(str(tiny_bundle / "model.so"), set(), [1, 3, 32, 32], "float32", "main",
                               np.random.default_rng(0), runs=2)
    assert everything["builtin_calls"] == r["builtin_calls"] + 2 and everything["kernels"] == {}


def test_a_failed_in_model_pass_keeps_the_isolated_times_and_says_why():
    from c2f_edge.profile.per_op import KernelTiming, breakdown
    from c2f_edge.profile.report import per_op_table

    timings = [KernelTiming("conv", "sig", 2, 1.5), KernelTiming("gelu", "sig", 1, 0.5)]
    bd = breakdown(timings, 4.0, {"error": "the model's runs made different calls"})
    assert bd["kernel_sum_ms"] == 3.5 and bd["in_model"] == {"error": "the model's runs made different calls"}
    assert all("in_model_ms" not in r for r in bd["rows"])
    summary = {**bd, "complete": True, "error": None}
    lines = per_op_table({"per_op_summary": summary, "per_op": bd["rows"],
                          "conditions": {"board": {"emulated": False}}})
    assert "in model ms" not in lines[2]
    assert "Timing the kernels in the model's own sequence failed: the model's runs made different calls" in lines


def test_compare_prints_ratios(tiny_local_run, tiny_bundle, tmp_path, capsys):
    first = tiny_local_run[2]
    second = tmp_path / "t2.json"
    assert cli(["profile", "--artifact", str(tiny_bundle), "--local", "--repeat", "5", "--threads", "2",
                "--per-op", "--json", str(second)]) == 0
    capsys.readouterr()
    assert cli(["profile", "--compare", str(first), str(second)]) == 0
    table = capsys.readouterr().out
    a, b = (json.loads(p.read_text()) for p in (first, second))
    assert a["conditions"]["threads"]["requested"] == 1 and b["conditions"]["threads"]["requested"] == 2
    ratio = b["latency_ms"]["p50"] / a["latency_ms"]["p50"]
    assert f"({ratio:.2f}x)" in table
    # the same bundle twice: the columns are told apart by its hash, then by the run's number
    sha = a["conditions"]["artifact"]["sha256"][:8]
    assert f"{sha} #1 | " in table and f"{sha} #2 |" in table
    # the before/after of a kernel change: both kernel sums, the second column as a ratio of the first
    sa, sb = (x["per_op_summary"] for x in (a, b))
    alone = sb["kernel_sum_ms"] / sa["kernel_sum_ms"]
    assert f"| kernel sum, alone | {sa['kernel_sum_ms']:.3f} ms | {sb['kernel_sum_ms']:.3f} ms ({alone:.2f}x) |" in table
    in_model = sb["in_model"]["kernel_sum_ms"] / sa["in_model"]["kernel_sum_ms"]
    assert f"| kernels in the model | {sa['in_model']['kernel_sum_ms']:.3f} ms | " in table
    assert f"({in_model:.2f}x) |" in table
    used = [r["conditions"]["threads"]["used"] for r in (a, b)]
    assert f"| threads | {used[0]} | {used[1]} |" in table
    # In-process runs size the pool themselves (x86 TVM would otherwise take half the hardware threads).
    assert used == [1, 2]


def test_a_split_reduction_build_is_labelled_as_one():
    """compile --split-reduction builds are other kernels: compare's columns must say which is which."""
    from c2f_edge.profile.report import label

    def result(split):
        return {"conditions": {"board": {"key": "local", "emulated": False},
                               "artifact": {"target": "host", "tuning": "untuned", "split_reduction": split}}}

    assert label(result(False)) == "host untuned @ local"
    assert label(result(True)) == "host untuned split @ local"


def test_bad_inputs_are_typed_errors(tiny_bundle, tmp_path, capsys):
    assert cli(["profile", "--artifact", str(tmp_path / "nope"), "--local"]) == 2
    assert "no bundle directory" in capsys.readouterr().err
    assert cli(["profile", "--artifact", str(tiny_bundle)]) == 2
    assert "choose exactly one of" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert cli(["profile", "--compare", str(bad), str(bad)]) == 2
    assert "not a c2f-edge profile result" in capsys.readouterr().err


def test_unknown_key_fails_fast(tiny_bundle, rpc_tracker, tmp_path, capsys):
    t0 = time.monotonic()
    rc = cli(["profile", "--artifact", str(tiny_bundle), "--rpc-tracker", rpc_tracker.address,
              "--rpc-key", "no-such-board", "--timeout", "20", "--json", str(tmp_path / "r.json")])
    err = capsys.readouterr().err
    assert rc == 3 and "no-such-board" in err and "hint:" in err
    assert time.monotonic() - t0 < 60
    d = json.loads((tmp_path / "r.json").read_text())
    assert d["complete"] is False and d["error"]["type"] == "RemoteError"


def test_busy_device_gives_up_within_timeout(tiny_bundle, rpc_tracker, tmp_path, capsys):
    from c2f_edge.board import rpc

    with rpc.host_server(tracker=rpc_tracker, key="profile-busy"):
        holder = rpc.connect(tracker=rpc_tracker.address, key="profile-busy")  # takes the only device
        t0 = time.monotonic()
        rc = cli(["profile", "--artifact", str(tiny_bundle), "--rpc-tracker", rpc_tracker.address,
                  "--rpc-key", "profile-busy", "--timeout", "5"])
        elapsed = time.monotonic() - t0
        del holder
    err = capsys.readouterr().err
    assert rc == 3 and "busy" in err
    assert elapsed < 60  # 5 s of waiting plus process start-up on shared cores


@pytest.mark.parametrize("how", ["kill", "hang"])
def test_board_lost_mid_profile_keeps_partial_results(how, tiny_bundle, rpc_tracker):
    """kill: the server dies (connection reset). hang: it stops answering (SIGSTOP), so only the watchdog
    can end the run. Either way: a RemoteError within the timeout, samples so far kept, complete false."""
    from c2f_edge.board import rpc
    from c2f_edge.core.errors import RemoteError
    from c2f_edge.profile import ProfileConfig, profile, raise_if_incomplete

    timeout = 8
    key = f"profile-{how}"
    server = rpc.start_host_server(tracker=rpc_tracker, key=key)
    first_samples, lost_at, result = threading.Event(), [], {}

    def on_event(ev):
        if ev["event"] == "samples" and not first_samples.is_set():
            first_samples.set()
            lost_at.append(time.monotonic())
            if how == "kill":
                server.stop()
            else:
                os.killpg(server.pid, signal.SIGSTOP)

    # ~25 ms per sample with the cooldown, in chunks of ~2.7 s (timeout/3): the loss hits the 2nd chunk.
    cfg = ProfileConfig(str(tiny_bundle), mode="tracker", tracker=rpc_tracker.address, key=key, repeat=5000,
                        cooldown_ms=20, timeout=timeout)
    try:
        result = profile(cfg, on_event=on_event)
        done = time.monotonic()
    finally:
        if how == "hang":
            os.killpg(server.pid, signal.SIGCONT)
        server.stop()
    assert lost_at, "no samples were measured before the board was lost"
    assert done - lost_at[0] < timeout + 20, f"took {done - lost_at[0]:.1f}s to give up"  # + 10 s watchdog grace
    assert result["complete"] is False and result["error"]["stage"] == "timing"
    assert 0 < result["latency_ms"]["samples"] < 5000 and result["latency_ms"]["p50"] is not None
    if how == "hang":
        assert result["error"].get("timed_out") and "no answer from the board" in result["error"]["message"]
    with pytest.raises(RemoteError, match="incomplete") as e:
        raise_if_incomplete(result)
    assert e.value.hint and e.value.exit_code == 3


@pytest.mark.slow
def test_host_bundle_through_tracker(host_bundle, host_rpc_server, rpc_tracker, tmp_path, capsys):
    """The Conv2Former-N host bundle (untuned: seconds per run), through the tracker by key, with per-op."""
    from c2f_edge.core.artifacts import read_manifest

    out, png = tmp_path / "host.json", tmp_path / "host.png"
    rc = cli(["profile", "--artifact", str(host_bundle), "--rpc-tracker", rpc_tracker.address,
              "--rpc-key", host_rpc_server.key, "--warmup", "0", "--repeat", "2", "--per-op",
              "--json", str(out), "--plot", str(png)])
    md = capsys.readouterr().out
    assert rc == 0
    d = json.loads(out.read_text())
    _check_result(d, 2)
    _check_per_op(d)
    m = read_manifest(host_bundle)
    c = d["conditions"]
    assert c["board"]["key"] == host_rpc_server.key and c["board"]["connection"] == "tracker"
    assert c["artifact"]["sha256"] == m["files"]["model.so"]["sha256"]
    assert c["artifact"]["tuning"] == m["tuning"]["status"]
    assert len(d["per_op"]) > 20  # Conv2Former-N has dozens of distinct fused kernels
    assert "Per-kernel breakdown" in md and "emulated" not in md.lower()
    # a remote VM cannot take the instrument hook: no times in the model's sequence
    assert d["per_op_summary"]["in_model"] is None and "in model ms" not in md
    w, h = _png_size(png)
    assert w >= 800 and h >= 400
    assert _drawn(png, KERNELS, "right") > 2000 and _drawn(png, WARNING) == 0


@pytest.mark.slow
@pytest.mark.emulated
def test_emulated_board_is_labelled(tiny_arm64_bundle, emulated_board, rpc_tracker, tmp_path, capsys):
    """An aarch64 bundle on the emulated board (tiny model: emulation is slow): results say EMULATED."""
    out, png = tmp_path / "emu.json", tmp_path / "emu.png"
    rc = cli(["profile", "--artifact", str(tiny_arm64_bundle), "--rpc-tracker", rpc_tracker.address,
              "--rpc-key", emulated_board.key, "--warmup", "0", "--repeat", "3", "--per-op", "--timeout", "300",
              "--json", str(out), "--plot", str(png)])
    md = capsys.readouterr().out
    assert rc == 0
    d = json.loads(out.read_text())
    _check_result(d, 3)
    _check_per_op(d)
    assert d["conditions"]["board"]["emulated"] is True
    assert "NOT latencies" in d["conditions"]["board"]["emulated_note"]
    assert any("EMULATED" in n for n in d["notes"])
    assert "EMULATED" in md and "emulated ms" in md
    _png_size(png)
    assert _drawn(png, WARNING) > 200  # the title says EMULATED, in red
    assert _drawn(png, HISTOGRAM, "left") > 500 and _drawn(png, KERNELS, "right") > 500


@pytest.mark.slow
@pytest.mark.emulated
@pytest.mark.skipif(os.environ.get("C2F_EDGE_PROFILE_FULL_EMULATED") != "1",
                    reason="Conv2Former-N on the emulated board takes ~5 min (one run 80-140 s under qemu); "
                           "set C2F_EDGE_PROFILE_FULL_EMULATED=1 to run it")
@pytest.mark.timeout(1800)  # several qemu runs of the whole model, beyond the suite's 10-minute limit
def test_emulated_board_conv2former(arm64_bundle, emulated_board, rpc_tracker, tmp_path, capsys):
    out = tmp_path / "emu-n.json"
    rc = cli(["profile", "--artifact", str(arm64_bundle), "--rpc-tracker", rpc_tracker.address,
              "--rpc-key", emulated_board.key, "--warmup", "0", "--repeat", "1", "--timeout", "900",
              "--json", str(out)])
    md = capsys.readouterr().out
    assert rc == 0
    d = json.loads(out.read_text())
    _check_result(d, 1)
    assert d["conditions"]["board"]["emulated"] is True and "EMULATED" in md
