"""Real TVM RPC services on loopback: tracker, host server, client helper, stop, scripts, errors."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from c2f_edge.board import rpc
from c2f_edge.core.errors import RemoteError, UsageError

ROOT = Path(__file__).resolve().parents[2]


def _affine_module(n: int = 16):
    """B = 2 * A + 1 as a TIR function."""
    from tvm.script import ir as I
    from tvm.script import tirx as T

    @I.ir_module
    class Mod:
        @T.prim_func
        def affine(A: T.Buffer((n,), "float32"), B: T.Buffer((n,), "float32")):
            T.func_attr({"global_symbol": "affine"})
            for i in range(n):
                B[i] = A[i] * T.float32(2) + T.float32(1)

    return Mod


def run_affine(remote, lib_path: Path, n: int = 16) -> np.ndarray:
    """Upload lib_path, run `affine` remotely on arange(n); returns the output (session objects dropped)."""
    import tvm

    remote.upload(str(lib_path))
    mod = remote.load_module(lib_path.name)
    dev = remote.cpu()
    x = tvm.runtime.tensor(np.arange(n, dtype="float32"), dev)
    y = tvm.runtime.tensor(np.zeros(n, dtype="float32"), dev)
    mod["affine"](x, y)
    return y.numpy()


def test_host_server_runs_module_through_tracker(rpc_tracker, host_rpc_server, tmp_path):
    import tvm

    assert host_rpc_server.key in rpc.tracker_keys(rpc_tracker)
    lib = tmp_path / "affine_host.so"
    tvm.compile(_affine_module(), target=tvm.target.Target({"kind": "llvm"})).export_library(str(lib))
    remote = rpc.connect(tracker=rpc_tracker.address, key=host_rpc_server.key)
    out = run_affine(remote, lib)
    np.testing.assert_array_equal(out, 2 * np.arange(16, dtype="float32") + 1)


def test_services_bind_loopback_and_record_handles(rpc_tracker, host_rpc_server):
    for svc in (rpc_tracker, host_rpc_server):
        assert svc.host == "127.0.0.1" and svc.is_running() and not svc.emulated
        assert Path(svc.log_path).is_file()
        assert rpc.Service.from_json(json.loads(json.dumps(svc.to_json()))).address == svc.address
    assert host_rpc_server.tracker == rpc_tracker.address


def listeners(port: int) -> set[int]:
    """Pids with a listening socket on `port`."""
    import psutil

    return {c.pid for c in psutil.net_connections("tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port}


def _script(*args, timeout=300):
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "rpc_services.py"), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


def test_script_start_status_stop_kills_the_process_group(rpc_tracker, tmp_path):
    pid_file = tmp_path / "server.json"
    start = _script("server", "start", "--tracker", rpc_tracker.address, "--key", "script-test",
                    "--pid-file", str(pid_file))
    assert start.returncode == 0, start.stderr
    svc = rpc.Service.from_json(json.loads(pid_file.read_text()))
    try:
        assert "script-test" in rpc.tracker_keys(rpc_tracker)
        # The stock server runs a forked worker beside its parent: killing the parent alone leaves the port held.
        group = set(rpc._group_members(svc.pid))
        assert len(group) >= 2
        assert listeners(svc.port) & group  # the worker, not the parent, holds the port
        assert _script("server", "status", "--pid-file", str(pid_file)).returncode == 0
        stop = _script("server", "stop", "--pid-file", str(pid_file))
        assert stop.returncode == 0 and "stopped" in stop.stdout
        assert not rpc.group_alive(svc.pid)
        # (Not port_is_free: on this shared machine another service may take the freed port at once.)
        assert not listeners(svc.port) & group
        assert not pid_file.exists()
        assert _script("server", "status", "--pid-file", str(pid_file)).returncode == 1
    finally:
        rpc.stop(svc)


def test_unreachable_tracker_raises_remote_error_quickly():
    port = rpc.free_port()
    t0 = time.monotonic()
    with pytest.raises(RemoteError, match=f"cannot reach RPC tracker at 127.0.0.1:{port}: connection refused") as e:
        rpc.connect(tracker=f"127.0.0.1:{port}", key="arm64-emu", timeout=2)
    # The stock client retries a refused tracker for 60 s; ours must answer at once.
    assert time.monotonic() - t0 < 10
    assert "tracker" in e.value.hint


def test_direct_connect_to_closed_port_raises_remote_error():
    port = rpc.free_port()
    with pytest.raises(RemoteError, match=f"cannot reach RPC server at 127.0.0.1:{port}: connection refused"):
        rpc.connect(f"127.0.0.1:{port}", timeout=2)


def test_silent_peer_is_not_taken_for_a_tracker():
    with socket.socket() as listener:  # accepts (backlog) but never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        addr = f"127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(RemoteError, match="does not answer like an RPC tracker"):
            rpc.connect(tracker=addr, key="x", timeout=1)


def test_unknown_key_lists_registered_keys(rpc_tracker, host_rpc_server):
    with pytest.raises(RemoteError, match="no RPC server registered under key 'no-such-board'") as e:
        rpc.connect(tracker=rpc_tracker.address, key="no-such-board", timeout=5)
    assert host_rpc_server.key in str(e.value)


@pytest.mark.parametrize("bad", ["localhost", "127.0.0.1:", ":9190", "127.0.0.1:port"])
def test_bad_address_is_a_usage_error(bad):
    with pytest.raises(UsageError, match="expected HOST:PORT"):
        rpc.connect(bad)


def test_connect_needs_exactly_one_of_address_or_tracker():
    with pytest.raises(UsageError):
        rpc.connect()
    with pytest.raises(UsageError):
        rpc.connect("127.0.0.1:1", tracker="127.0.0.1:2", key="k")


def test_stale_pid_file_never_kills_an_unrelated_process(tmp_path):
    # The recorded pid now belongs to some other program (pid reuse): stop must leave it alone.
    other = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        pid_file = tmp_path / "server.json"
        stale = rpc.Service(kind="server", host="127.0.0.1", port=1, pid=other.pid, log_path="/dev/null")
        pid_file.write_text(json.dumps(stale.to_json()))
        assert rpc.stop(pid_file) is False
        assert other.poll() is None
        assert not pid_file.exists()
    finally:
        other.kill()
        other.wait()
