"""TVM RPC services on this machine (tracker, host server) and a client helper with bounded timeouts.

    with rpc.tracker() as t, rpc.host_server(tracker=t, key="host") as s:
        remote = rpc.connect(tracker=t.address, key="host")      # or rpc.connect("127.0.0.1:9090")

Every service is a process group started with start_new_session=True, bound to 127.0.0.1 by default
on a free port, with a log file and an optional JSON pid file; `stop()` kills the whole group (the stock
TVM server forks a worker that would otherwise keep the port). The emulated aarch64 board
(board.emulator) returns the same `Service` handle.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Self

from c2f_edge.core.cache import cache_root
from c2f_edge.core.errors import RemoteError, UsageError, first_line

DEFAULT_HOST = "127.0.0.1"
# The stock tracker/server import the full TVM (a few seconds, more on busy shared cores).
READY_TIMEOUT = 90.0
CONNECT_TIMEOUT = 10.0
# TVM tracker protocol constants (tvm.rpc.base); copied so the client check needs no TVM import.
RPC_TRACKER_MAGIC = 0x2F271
TRACKER_SUCCESS, TRACKER_REQUEST, TRACKER_SUMMARY = 0, 4, 6


def run_dir() -> Path:
    """Logs and pid files of running services."""
    d = cache_root() / "run"
    d.mkdir(parents=True, exist_ok=True)
    return d


def free_port(host: str = DEFAULT_HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def parse_addr(addr: str, what: str = "address") -> tuple[str, int]:
    host, sep, port = str(addr).rpartition(":")
    if not sep or not host or not port.isdigit():
        raise UsageError(f"bad {what} {addr!r}: expected HOST:PORT", hint="e.g. 127.0.0.1:9190")
    return host, int(port)


@dataclass
class Service:
    """A running tracker, RPC server or emulated board. `emulated=True`: its timings are not latencies."""

    kind: str  # "tracker" | "server" | "board"
    host: str
    port: int
    pid: int
    log_path: str
    key: str | None = None
    tracker: str | None = None  # "HOST:PORT" of the tracker it registered with
    emulated: bool = False
    pid_file: str | None = None
    _proc: subprocess.Popen | None = field(default=None, repr=False, compare=False)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def to_json(self) -> dict:
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "_proc"}

    @classmethod
    def from_json(cls, d: dict) -> Service:
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__ and k != "_proc"})

    def write_pid_file(self) -> None:
        if self.pid_file:
            from c2f_edge.core.artifacts import write_json

            try:
                Path(self.pid_file).parent.mkdir(parents=True, exist_ok=True)
                write_json(self.pid_file, self.to_json())
            except BaseException:
                self.stop()  # an unrecorded service could never be stopped by the scripts
                raise

    def is_running(self) -> bool:
        return bool(_group_members(self.pid))

    def log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def connect(self, **kw):
        """A client session to this server/board (through its tracker if it has one)."""
        return connect(self, **kw)

    def stop(self, timeout: float = 10.0) -> None:
        """Kill the whole process group (SIGTERM, then SIGKILL), reap it, remove the pid file."""
        _kill_group(self.pid, timeout)
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1)
        if self.pid_file:
            with contextlib.suppress(FileNotFoundError):
                if json.loads(Path(self.pid_file).read_text()).get("pid") == self.pid:
                    os.unlink(self.pid_file)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def group_alive(pgid: int) -> bool:
    """True while any (non-zombie) process of the process group `pgid` lives."""
    return bool(_group_members(pgid))


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes of a process group."""
    import psutil

    out = []
    for p in psutil.process_iter(["pid", "status"]):
        try:
            if os.getpgid(p.pid) == pgid and p.info["status"] != psutil.STATUS_ZOMBIE:
                out.append(p.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return out


def _kill_group(pgid: int, timeout: float) -> None:
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(-pgid, os.WNOHANG)  # reap our own children so they stop counting
            if not _group_members(pgid):
                return
            time.sleep(0.1)


def wait_ready(svc: Service, probe, timeout: float) -> None:
    """Poll `probe()` until true; if the process dies or time runs out, stop it and raise with its log."""
    deadline = time.monotonic() + timeout
    while True:
        if probe():
            return
        dead = svc._proc.poll() is not None if svc._proc is not None else not svc.is_running()
        if dead or time.monotonic() > deadline:
            svc.stop()
            why = "exited" if dead else f"was not ready after {timeout:.0f}s"
            raise RemoteError(f"{svc.kind} on {svc.address} {why}; last log lines ({svc.log_path}):\n"
                              f"{svc.log_tail()}",
                              hint="read the log; a busy machine may need a longer timeout")
        time.sleep(0.2)


def _spawn(kind: str, cmd: list[str], host: str, port: int, name: str, **fields) -> Service:
    log_path = run_dir() / f"{name}.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    svc = Service(kind=kind, host=host, port=port, pid=proc.pid, log_path=str(log_path), **fields)
    svc._proc = proc
    return svc


def _tracker_socket(host: str, port: int, timeout: float) -> socket.socket:
    """Connect and do the tracker handshake, or raise RemoteError saying why."""
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e)).lower()
        raise RemoteError(f"cannot reach RPC tracker at {host}:{port}: {reason}",
                          hint="start one (`python scripts/rpc_services.py tracker start`) or fix --tracker "
                               "HOST:PORT") from e
    try:
        sock.sendall(struct.pack("<i", RPC_TRACKER_MAGIC))
        magic = struct.unpack("<i", _recvall(sock, 4))[0]
    except OSError as e:
        sock.close()
        raise RemoteError(f"{host}:{port} does not answer like an RPC tracker ({e})",
                          hint="is that the port of an RPC server rather than the tracker?") from e
    if magic != RPC_TRACKER_MAGIC:
        sock.close()
        raise RemoteError(f"{host}:{port} is not an RPC tracker",
                          hint="pass the tracker's HOST:PORT, not a server's")
    return sock


def _recvall(sock: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionResetError("connection closed")
        buf += chunk
    return buf


def _send_json(sock, data) -> None:
    raw = json.dumps(data).encode()
    sock.sendall(struct.pack("<i", len(raw)) + raw)


def _recv_json(sock):
    return json.loads(_recvall(sock, struct.unpack("<i", _recvall(sock, 4))[0]))


def tracker_summary(tracker: str | Service, timeout: float = CONNECT_TIMEOUT) -> dict:
    """The tracker's summary: {"server_info": [{"key": "server:KEY", "addr": [...]}], "queue_info": {...}}."""
    host, port = parse_addr(tracker.address if isinstance(tracker, Service) else tracker, "tracker")
    with _tracker_socket(host, port, timeout) as sock:
        _send_json(sock, [TRACKER_SUMMARY])
        value = _recv_json(sock)
    return value[1]


def boards(tracker: str | Service, key: str, timeout: float = CONNECT_TIMEOUT) -> list[str]:
    """HOST:PORT of every server registered under `key`, busy or free, in a stable order."""
    info = tracker_summary(tracker, timeout)["server_info"]
    return sorted(f"{s['addr'][0]}:{s['addr'][1]}" for s in info if s["key"] == f"server:{key}")


def tracker_keys(tracker: str | Service, timeout: float = CONNECT_TIMEOUT) -> list[str]:
    """Keys of the servers registered with the tracker (e.g. ["arm64-emu", "host"])."""
    info = tracker_summary(tracker, timeout)["server_info"]
    return sorted({s["key"].split(":", 1)[1] for s in info if s["key"].startswith("server:")})


def start_tracker(host: str = DEFAULT_HOST, port: int | None = None, pid_file=None,
                  timeout: float = READY_TIMEOUT, name: str | None = None) -> Service:
    """Start `python -m tvm.exec.rpc_tracker`; returns when it answers the tracker handshake."""
    port = port or free_port(host)
    cmd = [sys.executable, "-m", "tvm.exec.rpc_tracker", "--host", host, "--port", str(port),
           "--port-end", str(port + 1)]
    svc = _spawn("tracker", cmd, host, port, name or f"tracker-{port}",
                 pid_file=str(pid_file) if pid_file else None)

    def ready() -> bool:
        try:
            _tracker_socket(host, port, 1.0).close()
            return True
        except RemoteError:
            return False

    wait_ready(svc, ready, timeout)
    svc.write_pid_file()
    return svc


def start_host_server(tracker: str | Service | None = None, key: str = "host", host: str = DEFAULT_HOST,
                      port: int | None = None, pid_file=None, timeout: float = READY_TIMEOUT,
                      name: str | None = None, delay_s: float = 0.0, opencl: bool = False,
                      netns: str | None = None) -> Service:
    """Start `python -m tvm.exec.rpc_server` on this machine, registered with `tracker` under `key`.
    delay_s > 0: a stand-in for a slower board, each timed run that much longer (board.delayed_server).
    opencl: a local OpenCL board, with our OpenCL runtime loaded (board.opencl_server).
    netns: run it in that network namespace (`ip netns`), where `host` is the namespace's own address: a
    board on another host, as far as the tracker and clients can tell."""
    tracker_addr = tracker.address if isinstance(tracker, Service) else tracker
    # A namespace's address cannot be bound here; a port free here is as good as any in a fresh namespace.
    port = port or free_port(DEFAULT_HOST if netns else host)
    if opencl and delay_s:
        raise UsageError("a server is either delayed or an OpenCL board, not both",
                         hint="start them as two servers under their own keys")
    module = (["c2f_edge.board.opencl_server"] if opencl else
              ["c2f_edge.board.delayed_server", "--delay", str(delay_s)] if delay_s else ["tvm.exec.rpc_server"])
    cmd = [*(["ip", "netns", "exec", netns] if netns else []), sys.executable, "-m", *module, "--host", host,
           "--port", str(port), "--port-end", str(port + 1), "--key", key]
    if tracker_addr:
        tracker_summary(tracker_addr)  # fail fast (RemoteError) if it is not there
        cmd += ["--tracker", tracker_addr]
    svc = _spawn("server", cmd, host, port, name or f"server-{port}", key=key, tracker=tracker_addr,
                 pid_file=str(pid_file) if pid_file else None)

    def ready() -> bool:
        if tracker_addr:  # ready = registered: the tracker lists our port under our key
            with contextlib.suppress(RemoteError, OSError, ValueError):
                info = tracker_summary(tracker_addr, 2.0)["server_info"]
                return any(s["key"] == f"server:{key}" and s["addr"][1] == port for s in info)
            return False
        with contextlib.suppress(OSError):
            # A bare TCP connect: the stock server drops a peer that sends no magic and keeps listening.
            socket.create_connection((host, port), timeout=1.0).close()
            return True
        return False

    wait_ready(svc, ready, timeout)
    svc.write_pid_file()
    return svc


def server_arguments(parser, key: str) -> None:
    """The command line of a server module of ours (board.delayed_server, board.opencl_server): what
    start_host_server passes to it."""
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--port-end", type=int)
    parser.add_argument("--tracker", help="HOST:PORT of the tracker to register with")
    parser.add_argument("--key", default=key)


def serve(args, init=None) -> int:
    """Run TVM's RPC server with `server_arguments`' values until it exits. `init` runs in the server
    process before it forks a child per session (so it is passed pickled by reference: a module-level
    function or a functools.partial of one)."""
    from tvm import rpc as tvm_rpc

    tracker_addr = parse_addr(args.tracker, "--tracker") if args.tracker else None
    server = tvm_rpc.Server(args.host, args.port, args.port_end or args.port + 1, key=args.key,
                            tracker_addr=tracker_addr, server_init_callback=init)
    server.proc.join()
    return 0


@contextlib.contextmanager
def tracker(**kw):
    """`with rpc.tracker() as t:` a tracker on 127.0.0.1 and a free port; stopped on exit."""
    svc = start_tracker(**kw)
    try:
        yield svc
    finally:
        svc.stop()


@contextlib.contextmanager
def host_server(tracker: str | Service | None = None, key: str = "host", **kw):
    """`with rpc.host_server(tracker=t, key="host") as s:` a host RPC server; stopped on exit."""
    svc = start_host_server(tracker=tracker, key=key, **kw)
    try:
        yield svc
    finally:
        svc.stop()


_MARKERS = {"tracker": ("rpc_tracker",), "server": ("rpc_server", "delayed_server", "opencl_server"),
            "board": ("guest_server",)}


def _looks_like(svc: Service) -> bool:
    """Does the process group `svc.pid` still run the service the pid file recorded?"""
    import psutil

    for pid in _group_members(svc.pid):
        with contextlib.suppress(psutil.Error):
            if any(m in arg for m in _MARKERS.get(svc.kind, ()) for arg in psutil.Process(pid).cmdline()):
                return True
    return False


def stop(target: Service | str | os.PathLike, timeout: float = 10.0) -> bool:
    """Stop a Service, or the service recorded in a pid file. Returns False if it was not running."""
    if not isinstance(target, Service):
        path = Path(target)
        if not path.is_file():
            return False
        try:
            target = Service.from_json(json.loads(path.read_text()))
        except (ValueError, TypeError) as e:
            raise UsageError(f"{path} is not a c2f-edge pid file ({e})", hint="delete it by hand") from e
        target.pid_file = str(path)
        if not _looks_like(target):  # a stale file whose pid now belongs to someone else: do not kill it
            path.unlink()
            return False
    was_running = target.is_running()
    target.stop(timeout)
    return was_running


def connect(addr: str | Service | None = None, *, tracker: str | Service | None = None, key: str | None = None,
            timeout: float = CONNECT_TIMEOUT, wait: float = 60.0, session_timeout: float = 0):
    """Open a TVM RPC session, raising RemoteError instead of hanging.

    connect("HOST:PORT")                       direct to a server started without a tracker
    connect(tracker="HOST:PORT", key="KEY")    through a tracker, by device key
    connect(service)                           a Service handle (via its tracker if it has one)
    `timeout` bounds reaching the tracker/server; `wait` bounds waiting for a busy device.
    `session_timeout` (s, 0 = none) lets the server end an overlong session.
    """
    if isinstance(addr, Service):
        if addr.kind == "tracker":
            tracker, addr = addr, None
        elif addr.tracker:
            tracker, key, addr = addr.tracker, key or addr.key, None
        else:
            key, addr = key or addr.key, addr.address
    if isinstance(tracker, Service):
        tracker = tracker.address
    if (addr is None) == (tracker is None):
        raise UsageError("connect needs either HOST:PORT of a server or tracker=HOST:PORT with key=",
                         hint='e.g. connect(tracker="127.0.0.1:9190", key="arm64-emu")')
    if addr is not None:
        host, port = reach_server(addr, timeout)
        # A server serves one session at a time; one that just ended may still be shutting down.
        gc.collect()  # and one of ours that is unreachable may still be alive in a reference cycle
        deadline = time.monotonic() + wait
        while True:
            try:
                return _open(host, port, key or "", session_timeout, f"RPC server at {host}:{port}")
            except _Busy as e:
                if time.monotonic() > deadline:
                    raise RemoteError(f"RPC server at {host}:{port} stayed busy with another session for "
                                      f"{wait:.0f}s", hint="close the other session (drop every object "
                                      "that holds it, devices included) or connect through a tracker") from e
                time.sleep(0.5)
    return reserve(tracker, key, timeout=timeout, wait=wait, session_timeout=session_timeout)[1]


def reach_server(addr: str, timeout: float = CONNECT_TIMEOUT) -> tuple[str, int]:
    """(host, port) of a server that accepts a connection (no session is opened), or RemoteError."""
    host, port = parse_addr(addr, "RPC server address")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        reason = "timed out" if isinstance(e, TimeoutError) else (e.strerror or str(e)).lower()
        raise RemoteError(f"cannot reach RPC server at {host}:{port}: {reason}",
                          hint="start it (`python scripts/rpc_services.py server start`) or fix HOST:PORT; "
                               "a server registered with a tracker is reached with tracker= and key=") from e
    return host, port


def check_key(tracker: str, key: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """RemoteError unless the tracker answers and some server is registered under `key` (busy or free)."""
    keys = tracker_keys(tracker, timeout)
    if key not in keys:
        raise RemoteError(f"no RPC server registered under key {key!r} at tracker {tracker} "
                          f"(registered: {', '.join(keys) or 'none'})",
                          hint="start a server with that key, or pick one of the registered keys")


def reserve(tracker: str | Service, key: str | None, *, timeout: float = CONNECT_TIMEOUT, wait: float = 60.0,
            session_timeout: float = 0):
    """A session with a free board under `key`, through the tracker: (its HOST:PORT, the session). The
    board stays reserved for as long as the session lives."""
    if isinstance(tracker, Service):
        tracker = tracker.address
    if not key:
        raise UsageError("connecting through a tracker needs a device key", hint="pass key=, e.g. key=\"arm64-emu\"")
    thost, tport = parse_addr(tracker, "tracker")
    # A session of ours that is already unreachable may still hold a board from a reference cycle
    # (remote modules and their functions): free it before asking for one.
    gc.collect()
    check_key(tracker, key, timeout)
    deadline = time.monotonic() + wait
    while True:
        host, port, matchkey = _request(tracker, thost, tport, key, timeout, max(deadline - time.monotonic(), 0.1),
                                        wait)
        try:
            return f"{host}:{port}", _open(host, port, matchkey, session_timeout, f"device {key!r} at {host}:{port}")
        except _Busy as e:
            # A direct client got there first; the board re-offers itself once that session ends.
            if time.monotonic() > deadline:
                raise RemoteError(f"device {key!r} at tracker {tracker} stayed busy for {wait:.0f}s",
                                  hint="wait for the other session to finish, or start another server with "
                                       "that key") from e
            time.sleep(0.5)


def _request(tracker, thost, tport, key, timeout, remaining, wait):
    """Ask the tracker for `key`'s match key ourselves, so a busy device makes us wait at most `wait` s."""
    sock = _tracker_socket(thost, tport, timeout)
    try:
        sock.settimeout(remaining)
        _send_json(sock, [TRACKER_REQUEST, key, "", 1])
        value = _recv_json(sock)
    except TimeoutError as e:
        raise RemoteError(f"device {key!r} at tracker {tracker} stayed busy for {wait:.0f}s",
                          hint="wait for the other session to finish, or start another server with that key") from e
    except OSError as e:
        raise RemoteError(f"tracker {tracker} dropped the request for {key!r} ({e})",
                          hint="check the tracker's log") from e
    finally:
        sock.close()
    if value[0] != TRACKER_SUCCESS:
        raise RemoteError(f"tracker {tracker} refused the request for {key!r}: {value}", hint="check its log")
    return value[1]


class _Busy(Exception):
    pass


def _open(host, port, key, session_timeout, what):
    from tvm import rpc as tvm_rpc  # imported late: the reachability checks above need no TVM

    try:
        return tvm_rpc.connect(host, port, key, session_timeout=session_timeout)
    except Exception as e:  # tvm raises its own error types from C++
        text = str(e).strip()
        if "already have key" in text:  # the emulated board's answer while a session runs
            raise _Busy(text) from e
        if "matches key" in text or "mismatch" in text.lower():
            raise RemoteError(f"{what} did not accept key {key!r}",
                              hint="a server registered with a tracker is reached with tracker= and key=; "
                                   "a direct one with the key it was started with") from e
        raise RemoteError(f"cannot open an RPC session with {what}: {first_line(e)}",
                          hint="check the server's log (c2f-edge keeps it under ~/.cache/c2f-edge/run/)") from e


def port_is_free(port: int, host: str = DEFAULT_HOST) -> bool:
    """True if nothing listens on host:port (a connect is refused)."""
    try:
        socket.create_connection((host, port), timeout=1.0).close()
        return False
    except OSError as e:
        return e.errno == errno.ECONNREFUSED or isinstance(e, ConnectionRefusedError)
