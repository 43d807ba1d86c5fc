"""`c2f-edge profile --emulated` without a board: instructions counted on an emulated core, per kernel."""

from __future__ import annotations

import json
import shutil

import pytest

from c2f_edge.backend.kernel_trace import KernelCall
from c2f_edge.board import insn_count
from c2f_edge.board.insn_count import CLASSES, Function
from c2f_edge.cli import main as cli
from c2f_edge.core.errors import UsageError
from c2f_edge.profile import counts

needs_qemu = pytest.mark.skipif(not shutil.which(insn_count.QEMU), reason="the dynamic qemu-aarch64 (Debian "
                                "qemu-user) is not installed: make setup-system")


def _fn(name, n, entries=None, fma=0):
    classes = dict.fromkeys(CLASSES, 0)
    classes["fma_f32x4"], classes["other"] = fma, n - fma
    return Function(name, n, classes, entries, cycles=n / 2)


def test_a_kernel_is_its_wrapper_and_its_body_and_its_calls_are_the_wrappers_entries():
    functions = [_fn("conv_compute_", 900, 1, fma=400), _fn("python3.11", 500), _fn("__tvm_ffi_conv", 30, 3),
                 _fn("__tvm_ffi_add", 20, 2), _fn("add_compute_", 10, 2), _fn("memcpy_helper", 7, 1)]
    calls = [KernelCall("conv", [{"shape": [1, 8], "dtype": "float32"}])] * 3 + \
        [KernelCall("add", [{"shape": [1, 8], "dtype": "float32"}]), KernelCall("add", [{"scalar": 2}]),
         KernelCall("never_ran", [])]
    rows, outside = counts.kernel_rows(functions, calls)
    by = {r["kernel"]: r for r in rows}
    assert [r["kernel"] for r in rows] == ["conv", "add", "never_ran"]
    assert by["conv"]["instructions"] == 930 and by["conv"]["calls_counted"] == 3 == by["conv"]["calls_traced"]
    assert by["conv"]["per_call"] == 310 and by["conv"]["fma_lanes"] == 1600
    assert by["add"]["calls_counted"] == 2 and by["add"]["signature"] == "float32[1, 8]; 2"
    assert by["never_ran"]["instructions"] == 0 and by["never_ran"]["per_call"] is None
    assert by["conv"]["cycles_est"] == 465 and by["never_ran"]["cycles_est"] is None
    assert outside == [{"function": "python3.11", "instructions": 500, "calls": None, "cycles_est": 250},
                       {"function": "memcpy_helper", "instructions": 7, "calls": 1, "cycles_est": 3.5}]


def test_the_core_is_the_targets_or_the_one_named():
    rpi5 = {"target": {"name": "rpi5", "json": {"kind": "llvm", "mcpu": "cortex-a76"}}}
    arm64 = {"target": {"name": "arm64", "json": {"kind": "llvm", "mtriple": "aarch64-linux-gnu"}}}
    assert counts.emulated_cpu(rpi5, None) == "cortex-a76"
    assert counts.emulated_cpu(rpi5, "cortex-a72") == "cortex-a72"
    assert counts.emulated_cpu(arm64, "neoverse-n1") == "neoverse-n1"
    orin = {"target": {"name": "jetson-orin", "json": {"kind": "llvm", "mcpu": "cortex-a78ae"}}}
    assert counts.emulated_cpu(orin, None) == "cortex-a76"  # qemu 7.2 has no A78AE: its stand-in
    rpi4 = {"target": {"name": "rpi4", "json": {"tag": "raspberry-pi/4b-aarch64"},
                       "resolved": {"kind": "llvm", "mcpu": "cortex-a72"}}}
    assert counts.emulated_cpu(rpi4, None) == "cortex-a72"  # a tagged target: its resolved mcpu
    n1 = {"target": {"name": "n1", "json": {"kind": "llvm", "mcpu": "neoverse-n1"}}}
    assert counts.emulated_cpu(n1, None) == "neoverse-n1"  # qemu has this one
    with pytest.raises(UsageError, match="names no core that qemu emulates") as e:
        counts.emulated_cpu(arm64, None)
    assert "--cpu" in e.value.hint
    with pytest.raises(UsageError, match="cortex-a99"):
        counts.emulated_cpu(rpi5, "cortex-a99")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    from tests.compile.test_stage import _tiny_onnx

    path = tmp_path_factory.mktemp("counts") / "tiny.onnx"
    _tiny_onnx(path)
    return path


def _compile(onnx, target, out):
    from c2f_edge.compile import CompileConfig, compile_bundle

    compile_bundle(CompileConfig(target=target, onnx=str(onnx), out=str(out), verify="none"))
    return out


def test_bad_requests_fail_in_one_line_before_anything_runs(tiny_onnx, tmp_path, capsys):
    host = _compile(tiny_onnx, "host", tmp_path / "host")
    assert cli(["profile", "--artifact", str(host), "--emulated", "--json", str(tmp_path / "c.json")]) != 0
    err = capsys.readouterr().err
    assert "is a bundle for x86_64" in err and "--target rpi5" in err
    assert not (tmp_path / "c.json").exists()
    assert cli(["profile", "--artifact", str(host), "--local", "--cpu", "cortex-a76"]) != 0
    assert "--cpu picks the emulated core" in capsys.readouterr().err
    assert cli(["profile", "--artifact", str(host), "--emulated", "--plot", str(tmp_path / "p.png")]) != 0
    assert "--plot is for timing a board" in capsys.readouterr().err
    assert cli(["profile", "--artifact", str(tmp_path / "nothing"), "--emulated"]) != 0
    assert "no bundle directory" in capsys.readouterr().err


@pytest.mark.emulated
@needs_qemu
def test_instructions_per_kernel_add_up_and_calls_match_the_vms_trace(tiny_onnx, tmp_path, capsys):
    bundle = _compile(tiny_onnx, "rpi5", tmp_path / "rpi5")
    out = tmp_path / "counts.json"
    assert cli(["profile", "--artifact", str(bundle), "--emulated", "--per-op", "--json", str(out)]) == 0
    d = json.loads(out.read_text())
    assert d["kind"] == counts.KIND and d["conditions"]["cpu"] == "cortex-a76" and d["conditions"]["threads"] == 1
    assert d["instructions"] == sum(d["classes"].values()) > 0
    rows = {r["kernel"]: r for r in d["per_op"]}
    assert set(rows) >= {"conv2d", "mean"}
    for r in rows.values():  # every traced call entered its kernel's wrapper once
        assert r["calls_counted"] == r["calls_traced"] >= 1, r
    inside = sum(r["instructions"] for r in rows.values())
    assert inside + sum(f["instructions"] for f in d["outside_kernels"]) == d["instructions"]
    # Code outside the bundle goes by its file's own symbols: the runtime's workspace calls, one per kernel's.
    outside = {f["function"]: f for f in d["outside_kernels"]}
    assert outside["libtvm_runtime.so:TVMBackendAllocWorkspace"]["calls"] >= 1
    # The 3x3 convolution: each of its 8*32*32*27 MACs in an FMA lane, and nearly all FMAs of the model.
    assert rows["conv2d"]["fma_lanes"] >= 8 * 32 * 32 * 27
    assert rows["conv2d"]["fma_lanes"] >= 0.9 * d["fma_lanes"]
    # The cycle model's estimate, per kernel too: parts of the whole, labelled as an estimate.
    est = d["estimate"]
    assert est["board"] == "Raspberry Pi 5" and est["ms"] == pytest.approx(est["cycles"] / 2.4e6)
    assert 0 < rows["conv2d"]["ms_est"] < est["ms"]
    assert sum(r["ms_est"] for r in rows.values()) < est["ms"]
    table = capsys.readouterr().out
    assert "NOT times" in table and "| conv2d | 1 |" in table and "ESTIMATE, not a measurement" in table

    # The same bundle on the Pi 4's core, and both side by side.
    out2 = tmp_path / "a72.json"
    assert cli(["profile", "--artifact", str(bundle), "--emulated", "--cpu", "cortex-a72", "--json", str(out2)]) == 0
    a72 = json.loads(out2.read_text())
    assert a72["conditions"]["cpu"] == "cortex-a72" and a72["estimate"]["board"] == "Raspberry Pi 4"
    # The A72 issues half the FMAs per cycle at 0.75x the clock: the same work takes longer there.
    assert a72["estimate"]["ms"] > est["ms"]
    capsys.readouterr()
    assert cli(["profile", "--compare", str(out), str(out2)]) == 0
    table = capsys.readouterr().out
    assert "Instruction counts compared" in table and "@ cortex-a72" in table
