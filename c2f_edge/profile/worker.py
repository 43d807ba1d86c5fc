"""The measuring process: `python -m c2f_edge.profile.worker CONFIG.json`.

It talks to the board and streams what it measured as JSON lines on stdout, one event at a time, so the
parent (c2f_edge.profile.runner) keeps every sample even if the board drops, and can kill this process
(a stuck RPC call cannot be interrupted from inside) when no event arrives within the timeout.

Events: {"event": "stage"|"conditions"|"loaded"|"cold_start"|"samples"|"per_op_plan"|"kernel"|
"in_model"|"per_op_done"|"error"|"done", ...}.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np

from c2f_edge.core.errors import first_line
from c2f_edge.profile import conditions as cond
from c2f_edge.profile.timing import chunk_sizes

_out = None
# Runs this slow are timed by the client: an RPC round trip (~0.1-5 ms) is then well under 1%.
CLIENT_TIMING_MS = 1000.0


def emit(event: str, **data) -> None:
    _out.write(json.dumps({"event": event, **data}, default=str) + "\n")
    _out.flush()
    if event == "stage" and os.environ.get("C2F_EDGE_QUIET") != "1":
        print(f"profile: {data['stage']} ...", file=sys.stderr, flush=True)


def _connect(c: dict, timeout: float):
    if c["mode"] == "local":
        from tvm import rpc as tvm_rpc

        return tvm_rpc.LocalSession()
    from c2f_edge.board import rpc

    if c["mode"] == "tracker":  # the tracker picks a free board: say which
        addr, session = rpc.reserve(c["tracker"], c["key"], timeout=min(timeout, 30), wait=timeout,
                                    session_timeout=c.get("session_timeout") or 0)
        emit("board", addr=addr)
        return session
    return rpc.connect(c["addr"], key=c.get("key"), timeout=min(timeout, 30),
                       session_timeout=c.get("session_timeout") or 0)


def _roundtrip_ms(session, n: int = 5) -> float | None:
    """Client-side time of a trivial remote call: what a client-timed call carries on top."""
    try:
        f = session.get_function("runtime.NumThreads")
    except Exception:  # noqa: BLE001
        return None
    best = float("inf")
    for _ in range(n):
        t0 = time.perf_counter()
        f()
        best = min(best, time.perf_counter() - t0)
    return round(best * 1000, 4)


def run(cfg: dict) -> None:
    import tvm
    from tvm.runtime.vm import VirtualMachine

    from c2f_edge.core.progress import bar

    timeout = float(cfg["timeout"])
    emit("stage", stage="connect")
    session = _connect(cfg["connection"], timeout)

    emit("stage", stage="conditions")
    threads = cond.configure_threads(session, cfg.get("threads"), cfg.get("affinity", "big"))
    cpu = cond.remote_cpu(session)
    dev = session.device(cfg["device"], 0)
    emit("conditions", threads=threads, cpu=cpu, device_attrs=cond.device_info(dev),
         rpc_roundtrip_ms=_roundtrip_ms(session))

    emit("stage", stage="upload")
    t0 = time.perf_counter()
    remote_name = f"c2f_profile_{cfg['sha256'][:12]}.so"
    session.upload(cfg["library"], target=remote_name)
    upload_s = time.perf_counter() - t0
    emit("stage", stage="load")
    t0 = time.perf_counter()
    lib = session.load_module(remote_name)
    vm = VirtualMachine(lib, dev)
    load_s = time.perf_counter() - t0
    emit("loaded", upload_s=round(upload_s, 3), load_s=round(load_s, 3))

    rng = np.random.default_rng(0)
    shape, dtype = cfg["input_shape"], cfg["input_dtype"]
    x = tvm.runtime.tensor(rng.standard_normal(shape).astype(dtype), dev)
    func = cfg.get("function", "main")

    emit("stage", stage="cold start")
    t0 = time.perf_counter()
    vm[func](x)
    dev.sync()
    cold_ms = (time.perf_counter() - t0) * 1000
    emit("cold_start", ms=round(cold_ms, 4))

    emit("stage", stage="warmup")
    warm = []
    for _ in range(cfg["warmup"]):
        t0 = time.perf_counter()
        vm[func](x)
        dev.sync()
        warm.append((time.perf_counter() - t0) * 1000)
        emit("warmup", ms=round(warm[-1], 4))
    est_ms = min(warm) if warm else cold_ms  # sizes the timing chunks

    emit("stage", stage="timing")
    vm.save_function(func, "c2f_profile_main", x)
    if est_ms >= CLIENT_TIMING_MS:
        _time_on_client(cfg, vm, dev, bar)
    else:
        emit("timing_method", method="board")
        chunks = chunk_sizes(cfg["repeat"], max(est_ms, cfg["min_repeat_ms"] / cfg["number"]),
                             cfg["number"], timeout, cfg["cooldown_ms"])
        with bar(total=cfg["repeat"], desc="timing main", unit="sample") as pb:
            for size in chunks:
                te = vm.time_evaluator("c2f_profile_main", dev, number=cfg["number"], repeat=size,
                                       min_repeat_ms=cfg["min_repeat_ms"],
                                       cooldown_interval_ms=cfg["cooldown_ms"], repeats_to_cooldown=1)
                res = te()
                emit("samples", ms=[round(r * 1000, 5) for r in res.results])
                pb.update(size)

    if cfg.get("per_op"):
        try:
            _per_op(cfg, session, dev, rng, bar)
        except Exception as e:  # a breakdown that cannot be made must not cost the latency result
            if _is_connection_error(e):
                raise
            emit("per_op_error", message=first_line(e, 300))
    emit("done")


def _time_on_client(cfg, vm, dev, bar) -> None:
    """For runs of a second or more: time each call here, so no extra untimed run per chunk is spent
    (TVM's time evaluator always discards one). The RPC round trip (recorded) is then included."""
    emit("timing_method", method="client")
    f = vm["c2f_profile_main"]
    with bar(total=cfg["repeat"], desc="timing main", unit="sample") as pb:
        for i in range(cfg["repeat"]):
            if i and cfg["cooldown_ms"]:
                time.sleep(cfg["cooldown_ms"] / 1000)
            t0 = time.perf_counter()
            for _ in range(cfg["number"]):
                f()
            dev.sync()
            emit("samples", ms=[round((time.perf_counter() - t0) * 1000 / cfg["number"], 5)])
            pb.update(1)


def _per_op(cfg, session, dev, rng, bar) -> None:
    import tempfile

    from c2f_edge.backend import bundle_file, kernel_trace
    from c2f_edge.profile import per_op

    emit("stage", stage="per-op trace")
    calls = kernel_trace.trace_kernel_calls(bundle_file.vm_executable_bytes(cfg["library"]), cfg["input_shape"],
                                      cfg["input_dtype"], cfg.get("function", "main"))
    groups = per_op.group_calls(calls)
    emit("per_op_plan", kernels=len(groups), calls=len(calls))
    with tempfile.TemporaryDirectory(prefix="c2f-kernels-") as tmp:
        klib_path = bundle_file.kernel_library(cfg["library"], os.path.join(tmp, "kernels.so"))
        emit("stage", stage="per-op upload")
        remote_name = f"c2f_profile_kernels_{cfg['sha256'][:12]}.so"
        session.upload(str(klib_path), target=remote_name)
        klib = session.load_module(remote_name)
    emit("stage", stage="per-op timing")
    with bar(groups, desc="timing kernels", unit="kernel") as it:
        for call, n in it:
            err, samples = None, []
            try:
                samples = per_op.time_kernel(klib, dev, call, rng)
            except Exception as e:  # one kernel failing must not lose the others
                if _is_connection_error(e):
                    raise
                err = first_line(e, 300)
            emit("kernel", name=call.name, signature=call.signature(), calls=n, samples_ms=samples, error=err)
    if cfg["connection"]["mode"] == "local" and cfg["device"] == "cpu":
        emit("stage", stage="per-op in the model")
        try:
            emit("in_model", **per_op.time_in_model(cfg["library"], {c.name for c, _ in groups},
                                                    cfg["input_shape"], cfg["input_dtype"],
                                                    cfg.get("function", "main"), rng))
        except Exception as e:  # noqa: BLE001 - the isolated times stand without it
            emit("in_model", error=first_line(e, 300))
    emit("per_op_done")


def _is_connection_error(e: BaseException) -> bool:
    text = str(e)
    return isinstance(e, ConnectionError | EOFError | OSError) or any(
        s in text for s in ("Socket", "socket", "connection", "Connection", "RPCSession", "recv", "send"))


def main(argv: list[str] | None = None) -> int:
    global _out
    argv = sys.argv[1:] if argv is None else argv
    # Keep stdout for events only: anything else printed (TVM, libraries) goes to stderr.
    _out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with open(argv[0]) as f:
        cfg = json.load(f)
    from c2f_edge.core.errors import C2FError

    try:
        run(cfg)
        return 0
    except C2FError as e:
        emit("error", type=type(e).__name__, message=str(e), hint=e.hint)
    except Exception as e:  # noqa: BLE001 - everything else is the board's or the session's doing
        emit("error", type="RemoteError", message=first_line(e, 300), hint=None,
             connection=_is_connection_error(e))
    return 1


if __name__ == "__main__":
    sys.exit(main())
