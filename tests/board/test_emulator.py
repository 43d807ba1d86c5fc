"""The emulated aarch64 board: cached setup, prerequisite errors, running cross-compiled TIR and Relax
modules under qemu through the tracker, busy/stop behaviour. Timings on it are never asserted."""

from __future__ import annotations

import shutil
import socket

import numpy as np
import pytest

from c2f_edge.board import emulator, rpc
from c2f_edge.core.errors import RemoteError, ToolchainError
from tests.board.test_rpc import _affine_module, listeners, run_affine
from tests.fixtures.boards import AARCH64_TARGET

needs_qemu = pytest.mark.skipif(not shutil.which(emulator.QEMU),
                                reason="qemu-aarch64-static is not installed: run scripts/setup_emulator.sh")


def test_missing_qemu_names_the_apt_package(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing on PATH
    with pytest.raises(ToolchainError, match="qemu-aarch64-static not found") as e:
        emulator.check_prerequisites()
    assert "apt-get install qemu-user-static" in e.value.hint


def test_setup_without_qemu_raises_and_builds_nothing(monkeypatch, tmp_path):
    monkeypatch.setenv("C2F_EDGE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolchainError, match="qemu-aarch64-static"):
        emulator.setup()
    assert not (tmp_path / "cache" / "emulator").exists()


@needs_qemu
def test_setup_is_cached_and_runs_aarch64_python():
    first = emulator.setup()
    created = (first.root / "manifest.json").read_text()
    again = emulator.setup()
    assert again.root == first.root
    assert (again.root / "manifest.json").read_text() == created  # reused, not rebuilt
    probe = again.run(["-c", "import platform, tvm_ffi; print(platform.machine())"], timeout=300)
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.strip() == "aarch64"


@pytest.mark.emulated
def test_board_runs_cross_compiled_tir_module(rpc_tracker, emulated_board, aarch64_fcompile, tmp_path):
    import tvm

    assert emulated_board.emulated and emulated_board.key in rpc.tracker_keys(rpc_tracker)
    lib = tmp_path / "affine_a64.so"
    tvm.compile(_affine_module(), target=tvm.target.Target(AARCH64_TARGET)).export_library(
        str(lib), fcompile=aarch64_fcompile)
    assert lib.read_bytes()[18] == 183  # ELF e_machine EM_AARCH64: this can only run on the board
    remote = rpc.connect(tracker=rpc_tracker.address, key=emulated_board.key)
    out = run_affine(remote, lib)
    np.testing.assert_array_equal(out, 2 * np.arange(16, dtype="float32") + 1)


def _relax_mlp():
    from tvm import relax

    rng = np.random.default_rng(0)
    w = rng.standard_normal((8, 4)).astype("float32")
    bb = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType([2, 8], "float32"))
    with bb.function("main", [x]):
        with bb.dataflow():
            y = bb.emit(relax.op.matmul(x, relax.const(w)))
            out = bb.emit_output(relax.op.nn.gelu(y))
        bb.emit_func_output(out)
    return bb.get(), w


@pytest.mark.emulated
def test_board_runs_relax_vm_executable(rpc_tracker, emulated_board, aarch64_fcompile, tmp_path):
    import tvm
    from tvm import relax

    mod, _ = _relax_mlp()
    lib = tmp_path / "mlp_a64.so"
    tvm.compile(mod, target=tvm.target.Target(AARCH64_TARGET)).export_library(str(lib), fcompile=aarch64_fcompile)
    x = np.random.default_rng(1).standard_normal((2, 8)).astype("float32")
    # Reference: the same module on the host CPU.
    host_vm = relax.VirtualMachine(tvm.compile(mod, target=tvm.target.Target({"kind": "llvm"})), tvm.cpu())
    expected = host_vm["main"](tvm.runtime.tensor(x)).numpy()

    remote = rpc.connect(emulated_board)
    remote.upload(str(lib))
    vm = relax.VirtualMachine(remote.load_module(lib.name), remote.cpu())
    out = vm["main"](tvm.runtime.tensor(x, remote.cpu())).numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(out, 0)


@pytest.mark.emulated
def test_busy_board_refuses_a_direct_client_then_accepts_it(rpc_tracker, emulated_board):
    first = rpc.connect(emulated_board.address)
    with pytest.raises(RemoteError, match="stayed busy with another session"):
        rpc.connect(emulated_board.address, wait=1)
    del first  # ends the session
    second = rpc.connect(emulated_board.address, wait=120)
    assert second.cpu().exist
    del second
    # Direct sessions must not leave the tracker holding a match key the board no longer accepts.
    third = rpc.connect(tracker=rpc_tracker.address, key=emulated_board.key, wait=120)
    assert third.cpu().exist


@needs_qemu
@pytest.mark.emulated
def test_own_board_direct_then_stop_frees_port(tmp_path):
    pid_file = tmp_path / "board.json"
    with emulator.board(pid_file=pid_file) as b:
        assert b.tracker is None and pid_file.is_file()
        group = set(rpc._group_members(b.pid))
        assert listeners(b.port) <= group and listeners(b.port)
        remote = rpc.connect(b.address, key=b.key)
        assert remote.cpu().exist
        del remote
    assert not rpc.group_alive(b.pid)
    assert not listeners(b.port) & group
    assert not pid_file.exists()


@needs_qemu
def test_board_that_cannot_start_reports_its_log():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        with pytest.raises(RemoteError, match="board on 127.0.0.1:.* exited") as e:
            emulator.start_board(port=port, timeout=120)
    assert "cannot listen on" in str(e.value)  # the log tail is in the message


def test_board_needs_a_reachable_tracker():
    port = rpc.free_port()
    with pytest.raises(RemoteError, match="cannot reach RPC tracker"):
        emulator.start_board(tracker=f"127.0.0.1:{port}", timeout=5)


@pytest.mark.emulated
def test_board_provides_metaschedule_random_fill(emulated_board):
    # The runtime-only aarch64 library lacks it; MetaSchedule's RPC runner calls it to fill its inputs.
    import tvm

    remote = rpc.connect(emulated_board)
    fill = remote.get_function("tvm.contrib.random.random_fill_for_measure")
    t = tvm.runtime.tensor(np.zeros((4, 8), dtype="float32"), remote.cpu())
    fill(t)
    data = t.numpy()
    assert np.abs(data).max() > 0 and np.abs(data).max() <= 1.0
