"""The delayed host server: a stand-in for a slower board, and farms of servers under one key."""

import json
import subprocess
import sys
import time

import numpy as np

from c2f_edge.board import rpc


def _tiny_module(path):
    import tvm
    from tvm import te

    a = te.placeholder((256,), name="a")
    b = te.compute((256,), lambda i: a[i] * 2.0, name="b")
    tvm.tirx.build(te.create_prim_func([a, b]), target="llvm").export_library(str(path))
    return path


def test_every_timed_run_takes_the_delay_longer_and_reports_it(rpc_tracker, tmp_path):
    import tvm

    lib = _tiny_module(tmp_path / "double.so")
    with rpc.host_server(tracker=rpc_tracker, key="delay-test", delay_s=0.2) as server:
        assert rpc.boards(rpc_tracker, "delay-test") == [server.address]
        sess = rpc.connect(server)
        sess.upload(str(lib))
        m = sess.load_module("double.so")
        dev = sess.cpu()
        a = tvm.runtime.tensor(np.ones(256, "float32"), dev)
        b = tvm.runtime.tensor(np.zeros(256, "float32"), dev)
        t0 = time.perf_counter()
        res = m.time_evaluator(m.entry_name, dev, number=2, repeat=3)(a, b).results
        wall = time.perf_counter() - t0
        np.testing.assert_array_equal(b.numpy(), 2.0)  # the kernel itself still runs
        del m, a, b, dev, sess
    assert len(res) == 3 and all(0.2 <= r < 0.25 for r in res), res
    assert wall >= 6 * 0.2  # number x repeat timed runs, each slept


def test_script_starts_and_stops_a_farm_under_one_key(rpc_tracker, tmp_path):
    pid = tmp_path / "server.json"

    def script(*args):
        return subprocess.run([sys.executable, "scripts/rpc_services.py", "server", *args, "--pid-file", str(pid)],
                              capture_output=True, text=True, check=False)

    start = script("start", "--tracker", rpc_tracker.address, "--key", "farm-script", "--count", "2", "--delay", "0.1")
    files = sorted(tmp_path.glob("server-*.json"))
    services = [rpc.Service.from_json(json.loads(f.read_text())) for f in files]
    try:
        assert start.returncode == 0, start.stderr
        assert [f.name for f in files] == ["server-1.json", "server-2.json"]
        assert rpc.boards(rpc_tracker, "farm-script") == sorted(s.address for s in services)
        status = script("status")
        assert status.returncode == 0 and status.stdout.count('"running": true') == 2
        stop = script("stop")
        assert stop.returncode == 0 and stop.stdout.count("stopped") == 2
        assert not any(s.is_running() for s in services) and not list(tmp_path.glob("server-*.json"))
    finally:
        for s in services:
            rpc.stop(s)
