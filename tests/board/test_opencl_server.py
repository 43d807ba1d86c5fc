"""The local OpenCL board: an RPC server with our OpenCL runtime, standing in for a Mali or Adreno phone;
`c2f-edge profile` runs against it end to end on a bundle for the test target opencl-x86."""

from __future__ import annotations

import json

from c2f_edge.backend import targets
from c2f_edge.board.opencl import twin_target
from c2f_edge.cli import main as cli


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
