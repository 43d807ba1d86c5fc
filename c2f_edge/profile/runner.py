"""Profile a compiled bundle on a board: run the measuring worker, watch it, assemble the result.

The worker (c2f_edge.profile.worker) is a separate process so that a board that stops answering
cannot hang us: if no event arrives within `timeout` seconds it is killed, and whatever was measured
is returned with `complete: false`.
"""

from __future__ import annotations

import json
import os
import platform
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from c2f_edge.core import errors
from c2f_edge.core.artifacts import now_iso, sha256_file, tool_versions
from c2f_edge.core.errors import ArtifactError, RemoteError, UsageError
from c2f_edge.profile.per_op import KernelTiming, breakdown
from c2f_edge.profile.timing import latency_stats, throughput_ips

SCHEMA = 1
KIND = "c2f-edge.profile"
EMULATED_NOTE = ("EMULATED board (qemu user-mode emulation on another CPU): these timings are NOT latencies "
                 "of any real device; use them only to compare builds on the same emulator")
REMOTE_TVM_NOTE = "not exposed: TVM's RPC runtime has no version query"
WATCHDOG_GRACE_S = 10.0
STARTUP_LIMIT_S = 180.0


@dataclass
class ProfileConfig:
    artifact: str
    mode: str = "local"  # "tracker" | "direct" | "local"
    tracker: str | None = None  # HOST:PORT
    key: str | None = None
    addr: str | None = None  # HOST:PORT of a server (direct)
    warmup: int = 2
    repeat: int = 30
    number: int = 1
    min_repeat_ms: int = 0
    cooldown_ms: int = 0
    threads: int | None = None
    affinity: str = "big"
    per_op: bool = False
    timeout: float = 300.0
    emulated: bool | None = None  # None: detect (emulator key convention or a local board record)
    session_timeout: float | None = None

    def validate(self) -> None:
        if self.mode not in ("tracker", "direct", "local"):
            raise UsageError(f"unknown connection mode {self.mode!r}", hint="use tracker, direct or local")
        if self.mode == "tracker" and not (self.tracker and self.key):
            raise UsageError("--rpc-tracker needs --rpc-key", hint="e.g. --rpc-tracker 127.0.0.1:9190 --rpc-key host")
        if self.mode == "direct" and not self.addr:
            raise UsageError("--rpc needs HOST:PORT", hint="e.g. --rpc 127.0.0.1:9090")
        for name, lo in (("warmup", 0), ("repeat", 1), ("number", 1), ("min_repeat_ms", 0), ("cooldown_ms", 0)):
            if getattr(self, name) < lo:
                raise UsageError(f"--{name.replace('_', '-')} must be >= {lo}", hint="pass a larger value")
        if self.threads is not None and self.threads < 1:
            raise UsageError("--threads must be >= 1", hint="omit it to keep the board's default thread pool")
        if self.timeout <= 0:
            raise UsageError("--timeout must be > 0 seconds", hint="e.g. --timeout 300")
        if self.affinity not in ("big", "little"):
            raise UsageError("--affinity must be big or little", hint="big.LITTLE boards: big is the fast cluster")


def _looks_emulated(cfg: ProfileConfig) -> bool:
    """The c2f-edge emulator registers as '*-emu'; its pid-file record in the run dir says emulated too."""
    if cfg.emulated is not None:
        return cfg.emulated
    if cfg.key and cfg.key.endswith(("-emu", "-emulated")):
        return True
    from c2f_edge.board.rpc import run_dir

    port = cfg.addr.rpartition(":")[2] if cfg.addr else None
    for f in run_dir().glob("*.json"):
        try:
            d = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(d, dict) or not d.get("emulated"):
            continue
        if (cfg.key and d.get("key") == cfg.key) or (port and str(d.get("port")) == port):
            return True
    return False


def _bundle(artifact: str, local: bool) -> tuple[dict, Path, str]:
    from c2f_edge.compile.bundle import LIBRARY, check_runs_here, read_bundle_manifest

    d = Path(artifact)
    if not d.is_dir():
        raise ArtifactError(f"no bundle directory at {d}", hint="run `c2f-edge compile --target ...` first, "
                                                                "or pass --artifact build/<target>")
    m = read_bundle_manifest(d)  # checks model.so against the manifest's sha256
    if local:
        check_runs_here(d, m)
    lib = d / LIBRARY
    return m, lib, sha256_file(lib)


def _conditions(cfg: ProfileConfig, m: dict, lib: Path, sha: str, emulated: bool) -> dict:
    target = m.get("target", {})
    tuning = m.get("tuning", {})
    onnx = m.get("onnx", {})
    address = {"tracker": cfg.tracker, "direct": cfg.addr, "local": "in-process"}[cfg.mode]
    versions = tool_versions()
    return {
        "date": now_iso(),
        "board": {"key": cfg.key if cfg.mode != "local" else "local", "connection": cfg.mode, "address": address,
                  "emulated": emulated, "emulated_note": EMULATED_NOTE if emulated else None},
        "cpu": None,
        "device": {"type": m.get("runtime", {}).get("device", "cpu"), "attributes": {}},
        "threads": None,
        "tvm": {"client": versions.get("apache-tvm"), "client_ffi": versions.get("apache-tvm-ffi"),
                "remote": None, "remote_note": REMOTE_TVM_NOTE if cfg.mode != "local" else "same process as client"},
        "artifact": {"path": str(Path(cfg.artifact)), "sha256": sha, "bytes": lib.stat().st_size,
                     "target": target.get("name"), "target_json": target.get("json"),
                     "tuning": tuning.get("status"), "tuning_log": (tuning.get("log") or {}).get("path"),
                     "split_reduction": bool((m.get("config") or {}).get("split_reduction")),
                     "variant": onnx.get("variant"), "input": m.get("input")},
        "settings": {k: getattr(cfg, k) for k in ("warmup", "repeat", "number", "min_repeat_ms", "cooldown_ms",
                                                  "threads", "affinity", "per_op", "timeout")},
        "client": {"host": platform.node(), "c2f-edge": versions.get("c2f-edge")},
        "rpc_roundtrip_ms": None,
    }


def profile(cfg: ProfileConfig, on_event=None) -> dict:
    """Measure the bundle. Returns the result dict (see report.SCHEMA_DOC); never raises for a board that
    fails mid-run (the result then has complete=False and an `error`), but does for bad arguments.

    `on_event(event: dict)` is called for each worker event (stage, samples, kernel, ...), e.g. for a UI."""
    cfg.validate()
    m, lib, sha = _bundle(cfg.artifact, local=cfg.mode == "local")
    emulated = _looks_emulated(cfg)
    inp = m.get("input") or {}
    if not inp.get("shape"):
        raise ArtifactError(f"{cfg.artifact}/manifest.json has no input shape", hint="re-run `c2f-edge compile`")
    conds = _conditions(cfg, m, lib, sha, emulated)
    wcfg = {"connection": {"mode": cfg.mode, "tracker": cfg.tracker, "key": cfg.key, "addr": cfg.addr,
                           "session_timeout": cfg.session_timeout},
            "library": str(lib.resolve()), "sha256": conds["artifact"]["sha256"],
            "device": conds["device"]["type"], "input_shape": inp["shape"], "input_dtype": inp.get("dtype", "float32"),
            "function": m.get("runtime", {}).get("function", "main"), **asdict(cfg)}
    state = _run_worker(wcfg, cfg.timeout, on_event)
    return _assemble(cfg, conds, inp, state)


def _run_worker(wcfg: dict, timeout: float, on_event=None) -> dict:
    state = {"stage": "start", "board_addr": None, "samples": [], "cold": None, "kernels": [], "per_op_plan": None,
             "per_op_done": False, "per_op_error": None, "in_model": None, "done": False,
             "timing_method": None, "error": None, "loaded": None, "warmup": []}
    fd, cfg_path = tempfile.mkstemp(prefix="c2f-profile-", suffix=".json")
    with os.fdopen(fd, "w") as f:
        json.dump(wcfg, f)
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    if wcfg.get("mode") == "local" and wcfg.get("threads"):
        # The pool's size is fixed when it starts; on x86 TVM halves the hardware threads by default
        # (one thread on a 2-vCPU VM), and config_threadpool cannot grow it afterwards.
        env["TVM_NUM_THREADS"] = str(wcfg["threads"])
    proc = subprocess.Popen([sys.executable, "-m", "c2f_edge.profile.worker", cfg_path], stdout=subprocess.PIPE,
                            stdin=subprocess.DEVNULL, start_new_session=True, env=env, text=True)
    events: queue.Queue = queue.Queue()

    def reader():
        for line in proc.stdout:
            events.put(line)
        events.put(None)

    threading.Thread(target=reader, daemon=True).start()
    # The worker bounds its own waits by `timeout` and then says what went wrong; the watchdog fires a
    # little later, for calls that cannot be bounded from inside. Starting the worker (importing TVM
    # here, on possibly busy cores) is not the board's time.
    step_limit = timeout + WATCHDOG_GRACE_S
    deadline = time.monotonic() + max(step_limit, STARTUP_LIMIT_S)
    try:
        while True:
            try:
                line = events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                _kill(proc)
                state["error"] = {"type": "RemoteError", "stage": state["stage"], "timed_out": True,
                                  "message": f"no answer from the board for {step_limit:g}s during "
                                             f"{state['stage']}",
                                  "hint": "the board hung or is overloaded: check it and its server log, or raise "
                                          "--timeout (it bounds each step, not the whole run)"}
                break
            if line is None:
                code = proc.wait()
                if not state["done"] and state["error"] is None:
                    state["error"] = {"type": "RemoteError", "stage": state["stage"],
                                      "message": f"the measuring process exited with code {code} during "
                                                 f"{state['stage']}",
                                      "hint": "run with -v; the lines above on stderr say why"}
                break
            deadline = time.monotonic() + step_limit
            ev = json.loads(line)
            if on_event is not None:
                on_event(dict(ev))
            _apply(state, ev)
    except BaseException:
        _kill(proc)
        raise
    finally:
        os.unlink(cfg_path)
    return state


# Worker event -> (state key, how the event updates it). "set" stores one field of the event (or, with
# field None, the whole event), "add" appends a field, "extend" adds a field's list, "flag" sets True.
_EVENTS = {
    "stage": ("stage", "set", "stage"),
    "board": ("board_addr", "set", "addr"),
    "conditions": ("conditions", "set", None),
    "loaded": ("loaded", "set", None),
    "cold_start": ("cold", "set", "ms"),
    "warmup": ("warmup", "add", "ms"),
    "timing_method": ("timing_method", "set", "method"),
    "samples": ("samples", "extend", "ms"),
    "per_op_plan": ("per_op_plan", "set", None),
    "kernel": ("kernels", "add", None),
    "in_model": ("in_model", "set", None),
    "per_op_error": ("per_op_error", "set", "message"),
    "per_op_done": ("per_op_done", "flag", None),
    "done": ("done", "flag", None),
}


def _apply(state: dict, ev: dict) -> None:
    kind = ev.pop("event")
    if kind == "error":
        state["error"] = {"stage": state["stage"], **ev}
        return
    if kind not in _EVENTS:
        return  # an event from a newer worker: ignore it
    key, how, field = _EVENTS[kind]
    value = ev if field is None else ev[field]
    if how == "set":
        state[key] = value
    elif how == "add":
        state[key].append(value)
    elif how == "extend":
        state[key].extend(value)
    else:
        state[key] = True


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def _assemble(cfg: ProfileConfig, conds: dict, inp: dict, state: dict) -> dict:
    if state.get("board_addr"):  # which of the key's boards the tracker gave us
        conds["board"]["server"] = state["board_addr"]
    wc = state.get("conditions") or {}
    if wc:
        conds["cpu"] = wc.get("cpu")
        conds["threads"] = wc.get("threads")
        conds["device"]["attributes"] = wc.get("device_attrs") or {}
        conds["rpc_roundtrip_ms"] = wc.get("rpc_roundtrip_ms")
    if conds["board"]["emulated"] and conds["cpu"]:
        conds["cpu"]["note"] = ("emulated board: the CPU data comes from the machine running the emulator, "
                                "not from an aarch64 device")
    stats = latency_stats(state["samples"], state["cold"])
    batch = int(inp["shape"][0]) if inp.get("shape") else 1
    per_op_rows, per_op_summary = [], None
    if cfg.per_op and (state["kernels"] or state["per_op_plan"] or state["per_op_error"]):
        timings = [KernelTiming(k["name"], k["signature"], k["calls"],
                                (sorted(k["samples_ms"])[len(k["samples_ms"]) // 2] if k["samples_ms"] else None),
                                k.get("error"), k["samples_ms"]) for k in state["kernels"]]
        bd = breakdown(timings, stats["p50"], state["in_model"])
        per_op_rows = bd.pop("rows")
        plan = state["per_op_plan"] or {}
        per_op_summary = {**bd, "kernels_planned": plan.get("kernels"), "calls_planned": plan.get("calls"),
                          "complete": state["per_op_done"], "error": state["per_op_error"],
                          "method": "each distinct kernel timed alone on the board (TVM time evaluator, random "
                                    "inputs of the traced shapes, median of 3); total = per call x calls; "
                                    "share = total / kernel sum"}
    error = state["error"]
    complete = state["done"] and error is None
    notes = []
    if conds["board"]["emulated"]:
        notes.append(EMULATED_NOTE)
    if stats["samples"] and stats["samples"] < 100:
        notes.append(f"p99 from {stats['samples']} sample(s) is close to the maximum; use --repeat >= 100 for tails")
    if state["timing_method"] == "client":
        notes.append("runs take over a second, so each sample was timed by the client around the call (no untimed "
                     "run per chunk); it includes one RPC round trip (see rpc_roundtrip_ms)")
    else:
        notes.append("each sample is the mean of --number runs timed on the board (TVM time evaluator); each chunk "
                     "of samples starts with one untimed run")
    notes.append("cold_start is the first call after loading, timed by the client (includes one RPC round trip)")
    return {
        "schema": SCHEMA,
        "kind": KIND,
        "complete": complete,
        "error": error,
        "conditions": conds,
        "latency_ms": stats,
        "throughput_ips": throughput_ips(stats["mean"], batch),
        "timing_method": state["timing_method"],
        "samples_ms": state["samples"],
        "warmup_ms": state["warmup"],
        "load": state["loaded"],
        "per_op": per_op_rows,
        "per_op_summary": per_op_summary,
        "notes": notes,
    }


def raise_if_incomplete(result: dict) -> None:
    """Turn a failed run into the typed error (after the caller has saved the partial result)."""
    err = result.get("error")
    if result.get("complete") or not err:
        return
    cls = getattr(errors, err.get("type") or "", None)
    if not (isinstance(cls, type) and issubclass(cls, errors.C2FError)):
        cls = RemoteError
    n = result["latency_ms"]["samples"]
    msg = err["message"]
    if cls is RemoteError and err.get("stage") not in ("start", "connect"):
        msg = f"{msg} (stage: {err.get('stage')}; {n} sample(s) kept, marked incomplete)"
    hint = err.get("hint") or ("the board or its RPC server dropped: check it and its log; partial results are "
                               "in --json with complete: false")
    raise cls(msg, hint=hint)
