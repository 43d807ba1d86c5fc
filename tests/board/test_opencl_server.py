"""The local OpenCL board: an RPC server with our OpenCL runtime, standing in for a Mali or Adreno phone;
`c2f-edge profile` runs against it end to end on a bundle for the test target opencl-x86."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from c2f_edge.backend import targets
from c2f_edge.board.opencl import twin_target
from c2f_edge.cli import main as cli
from tests.fixtures.boards import stop_in_session
from tests.fixtures.tuning import measured, tuning_records


def test_the_test_target_is_the_twin_of_mali():
    assert targets.get("opencl-x86").to_json() == twin_target(targets.get("mali").to_json())
    assert "test target" in targets.get("opencl-x86").description


def test_profile_per_op_lists_the_opencl_kernels_of_a_bundle_on_the_local_board(opencl_board, rpc_tracker,
                                                                                 tiny_opencl_x86, tmp_path, capsys):
    out = tmp_path / "profile.json"
    code = cli(["profile", "--artifact", str(tiny_opencl_x86), "--rpc-tracker", rpc_tracker.address,
                "--rpc-key", "opencl", "--per-op", "--repeat", "3", "--warmup", "1", "--json", str(out)])
    printed = capsys.readouterr().out
    assert code == 0, printed
    d = json.loads(out.read_text())
    assert d["complete"] and d["error"] is None
    device = d["conditions"]["device"]
    assert device["type"] == "opencl" and device["attributes"]["device_name"]  # queried on the board
    rows, summary = d["per_op"], d["per_op_summary"]
    assert rows and summary["kernels_failed"] == 0 and summary["complete"]
    assert sum(r["share"] for r in rows) > 0.999
    assert any(r["kernel"].startswith("fused_conv2d") for r in rows)
    assert "Per-kernel breakdown" in printed


def test_an_opencl_board_killed_mid_profile_ends_it_like_a_cpu_board(rpc_tracker, cl_device, tiny_opencl_x86):
    """The server dies while samples are being taken: a RemoteError within the timeout, the samples so far
    kept and the result marked incomplete (the same handling as a CPU board's, tests/profile)."""
    from c2f_edge.board import rpc
    from c2f_edge.core.errors import RemoteError
    from c2f_edge.profile import ProfileConfig, profile, raise_if_incomplete

    timeout = 30
    server = rpc.start_host_server(tracker=rpc_tracker, key="opencl-kill", opencl=True)
    lost_at = []

    def on_event(ev):
        if ev["event"] == "samples" and not lost_at:
            lost_at.append(time.monotonic())
            server.stop()

    cfg = ProfileConfig(str(tiny_opencl_x86), mode="tracker", tracker=rpc_tracker.address, key="opencl-kill",
                        repeat=200, warmup=1, timeout=timeout)
    try:
        result = profile(cfg, on_event=on_event)
        done = time.monotonic()
    finally:
        server.stop()
    assert lost_at, "no samples were measured before the board was lost"
    assert done - lost_at[0] < timeout + 20
    assert result["complete"] is False and result["error"]["stage"] == "timing"
    assert 0 < result["latency_ms"]["samples"] < 200
    with pytest.raises(RemoteError, match="incomplete") as e:
        raise_if_incomplete(result)
    assert "\n" not in str(e.value) and e.value.hint and e.value.exit_code == 3


def test_an_opencl_board_without_a_device_refuses_to_start(cl_device, tmp_path):
    env = {**os.environ, "OCL_ICD_VENDORS": str(tmp_path)}  # an empty directory: no OpenCL driver
    proc = subprocess.run([sys.executable, "-m", "c2f_edge.board.opencl_server", "--port", "1"], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")] == [
        ("error: no OpenCL device to run on: no OpenCL platform (is an ICD such as PoCL installed under "
        "/etc/OpenCL/vendors?)")]


def test_an_opencl_board_lost_mid_tune_stops_it_and_the_same_call_resumes(cl_device, rpc_tracker, tiny_onnx,
                                                                          tmp_path, capsys):
    """`c2f-edge tune` against the local OpenCL board, on a small conv net (the path is the same as
    Conv2Former's; its kernels build on PoCL in seconds): every candidate is an OpenCL build, sent over RPC
    and timed on the OpenCL device. The board's server dies while it measures: tuning stops with the farm's
    one-line error, what was measured stays and nothing failed is recorded; with the board back, the same
    command finishes the budget (the handling of CPU boards, tests/tune/test_farm.py)."""
    from c2f_edge.board import rpc
    from c2f_edge.core.errors import RemoteError
    from c2f_edge.tune import TuneConfig, tune

    key, work = "opencl-gone", tmp_path / "log"
    board = rpc.start_host_server(tracker=rpc_tracker, key=key, opencl=True)
    # Sessions: tune's reachability check, then one per candidate (GPU targets measure no default
    # schedule): the 4th is the first candidate of round 2, once round 1's 2 are recorded.
    stop_in_session(board, 4, after_s=0.3)
    cfg = TuneConfig(target="opencl-x86", trials=4, onnx=str(tiny_onnx), work_dir=str(work), trials_per_round=2,
                     rpc_tracker=rpc_tracker.address, rpc_key=key, max_tasks=1)
    try:
        with pytest.raises(RemoteError, match=f"every board under key '{key}' .* dropped") as e:
            tune(cfg)
    finally:
        board.stop()
    assert "\n" not in str(e.value)
    assert "run the same command again to resume" in capsys.readouterr().err
    kept = tuning_records(work)
    assert 1 <= len(kept) < 4 and measured(kept) == len(kept)
    with rpc.host_server(tracker=rpc_tracker, key=key, opencl=True):
        code = cli(["tune", "--target", "opencl-x86", "--trials", "4", "--trials-per-round", "2", "--max-tasks", "1",
                    "--onnx", str(tiny_onnx), "--work-dir", str(work), "--rpc-tracker", rpc_tracker.address,
                    "--rpc-key", key])
    assert code == 0
    records = tuning_records(work)
    assert len(records) == 4 and records[:len(kept)] == kept and measured(records) >= 2, records
    meta = json.loads((work / "meta.json").read_text())
    assert meta["target"]["kind"] == "opencl" and meta["machine"]["key"] == key


def test_an_fp16_tune_against_a_board_without_half_is_refused_before_building(opencl_board, rpc_tracker, tiny_onnx,
                                                                               tmp_path, capsys):
    from c2f_edge.board import opencl

    if not opencl.fp16_problem():
        pytest.skip("the local OpenCL device offers cl_khr_fp16: nothing to refuse")
    work = tmp_path / "log"
    code = cli(["tune", "--target", "opencl-x86", "--precision", "fp16", "--trials", "4", "--onnx", str(tiny_onnx),
                "--work-dir", str(work), "--rpc-tracker", rpc_tracker.address, "--rpc-key", "opencl"])
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "does not offer cl_khr_fp16" in errors[0], err
    assert not (work / "database_tuning_record.json").exists()
