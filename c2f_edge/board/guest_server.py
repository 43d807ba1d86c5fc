"""In-process TVM RPC server loop, for the emulated aarch64 board (run by the guest Python under qemu).

The stock `python -m tvm.exec.rpc_server` starts its worker by re-executing `sys.executable`, which fails
under qemu-user without binfmt registration. This loop listens, registers with a tracker (same wire protocol
as tvm.rpc.server) and serves each session with the C++ `rpc.ServerLoop`, in a fork()ed child (no exec), so
a crashing session or a session timeout does not take the board down.

Standalone on purpose: the guest has only tvm and numpy, not c2f_edge's dependencies.
Usage: python guest_server.py --host 127.0.0.1 --port 9095 --key arm64-emu [--tracker H:P] [--ready-file F]
"""

import argparse
import json
import os
import random
import select
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time

RPC_MAGIC = 0xFF271
RPC_TRACKER_MAGIC = 0x2F271
RPC_CODE_SUCCESS = RPC_MAGIC + 0
RPC_CODE_DUPLICATE = RPC_MAGIC + 1
RPC_CODE_MISMATCH = RPC_MAGIC + 2
TRACKER_SUCCESS, TRACKER_PUT, TRACKER_UPDATE_INFO, TRACKER_GET_PENDING = 0, 3, 5, 7
PING_PERIOD = 2.0
# A match key handed to a client that never connects is re-offered after this long.
UNMATCHED_TIMEOUT = 6.0
HANDSHAKE_TIMEOUT = 10.0


def log(msg):
    print(f"{time.strftime('%H:%M:%S')} board[{os.getpid()}]: {msg}", flush=True)


def recvall(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionResetError("peer closed the connection")
        buf += chunk
    return buf


def send_json(sock, data):
    raw = json.dumps(data).encode()
    sock.sendall(struct.pack("<i", len(raw)) + raw)


def recv_json(sock):
    return json.loads(recvall(sock, struct.unpack("<i", recvall(sock, 4))[0]))


class Tracker:
    """This board's registration with an RPC tracker."""

    def __init__(self, addr, key, port):
        host, _, p = addr.rpartition(":")
        self.addr, self.key, self.port = (host, int(p)), key, port
        self.sock, self.matchkey, self.unmatched = None, None, 0
        # Every match key offered on this connection and not yet used: a client may come late with an old one.
        self.offered = set()

    def connect(self):
        deadline = time.monotonic() + 60
        while True:
            try:
                self.sock = socket.create_connection(self.addr, timeout=30)
                break
            except ConnectionRefusedError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        self.sock.sendall(struct.pack("<i", RPC_TRACKER_MAGIC))
        if struct.unpack("<i", recvall(self.sock, 4))[0] != RPC_TRACKER_MAGIC:
            raise RuntimeError(f"{self.addr} is not an RPC tracker")
        send_json(self.sock, [TRACKER_UPDATE_INFO, {"key": "server:" + self.key, "addr": [None, self.port]}])
        assert recv_json(self.sock) == TRACKER_SUCCESS
        self.offered.clear()  # a new connection: the tracker forgot the old offers
        log(f"registered with tracker {self.addr[0]}:{self.addr[1]} as {self.key!r}")

    def offer(self):
        """Offer this board to the tracker's queue under a fresh match key."""
        self.matchkey = f"{self.key}:{random.random()}"
        self.offered.add(self.matchkey)
        self.unmatched = 0
        send_json(self.sock, [TRACKER_PUT, self.key, [self.port, self.matchkey], None])
        assert recv_json(self.sock) == TRACKER_SUCCESS

    def ping(self):
        """Called when idle: re-offer if the tracker handed our key to a client that never came."""
        send_json(self.sock, [TRACKER_GET_PENDING])
        if self.matchkey in recv_json(self.sock):
            self.unmatched = 0
            return
        self.unmatched += 1
        if self.unmatched * PING_PERIOD > UNMATCHED_TIMEOUT:
            log("match key was taken but no client came; offering again")
            self.offer()

    def close(self):
        if self.sock:
            self.sock.close()
        self.sock = None


def handshake(conn, accepted_keys, key):
    """Read the client's [magic, key]; answer like tvm.rpc.server. Returns (key used, options) or None."""
    conn.settimeout(HANDSHAKE_TIMEOUT)
    try:
        if struct.unpack("<i", recvall(conn, 4))[0] != RPC_MAGIC:
            return None
        keylen = struct.unpack("<i", recvall(conn, 4))[0]
        words = recvall(conn, keylen).decode().split()
        if not words or words[0] not in {"client:" + k for k in accepted_keys}:
            conn.sendall(struct.pack("<i", RPC_CODE_MISMATCH))
            log(f"key mismatch: {words[:1]}")
            return None
        server_key = ("server:" + key).encode()
        conn.sendall(struct.pack("<ii", RPC_CODE_SUCCESS, len(server_key)) + server_key)
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    conn.settimeout(None)
    opts = {}
    for w in words[1:]:
        if w.startswith("-timeout="):
            opts["timeout"] = float(w[len("-timeout="):])
    return words[0][len("client:"):], opts


def serve_session(conn):
    """Run one RPC session on `conn` in this process: uploads land in a fresh temp dir."""
    import tvm
    import tvm_ffi

    workdir = tempfile.mkdtemp(prefix="c2f-board-session-")
    os.chdir(workdir)  # uploads are relative to the session dir, like the stock server

    @tvm_ffi.register_global_func("tvm.rpc.server.workpath", override=True)
    def _workpath(path):
        return os.path.join(workdir, path)

    @tvm_ffi.register_global_func("tvm.rpc.server.load_module", override=True)
    def _load_module(name):
        path = os.path.join(workdir, name)
        log(f"load_module {name}")
        return tvm.runtime.load_module(path)

    try:
        tvm_ffi.get_global_func("rpc.ServerLoop")(conn.fileno())
    finally:
        os.chdir("/")
        shutil.rmtree(workdir, ignore_errors=True)


def refuse_busy(listen):
    """Answer a client that arrives during a session at once (it would otherwise wait in the backlog)."""
    conn, _ = listen.accept()
    conn.settimeout(2.0)
    try:
        if struct.unpack("<i", recvall(conn, 4))[0] == RPC_MAGIC:
            recvall(conn, struct.unpack("<i", recvall(conn, 4))[0])
            # The stock client reports this code as a key already in use; board.rpc says "busy".
            conn.sendall(struct.pack("<i", RPC_CODE_DUPLICATE))
            log("refused a client: a session is running")
    except (OSError, ValueError):
        pass
    conn.close()


def run_forked(conn, opts, listen):
    pid = os.fork()
    if pid == 0:  # child: serve, then leave without running the parent's cleanup
        code = 0
        try:
            serve_session(conn)
        except BaseException as e:  # noqa: BLE001 - report and exit the child whatever happened
            log(f"session error: {e}")
            code = 1
        finally:
            os._exit(code)
    conn.close()
    deadline = time.monotonic() + opts["timeout"] if opts.get("timeout") else None
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            if status:
                log(f"session process exited with status {status}")
            return
        if deadline and time.monotonic() > deadline:
            log(f"session exceeded {opts['timeout']}s, killing it")
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return
        if select.select([listen], [], [], 0.05)[0]:
            refuse_busy(listen)


def register_fallbacks():
    """Globals that the runtime-only library lacks but clients call remotely (MetaSchedule's RPC runner fills
    its measurement inputs with tvm.contrib.random.random_fill_for_measure). numpy stands in for them."""
    import numpy as np
    import tvm_ffi

    names = set(tvm_ffi.registry.list_global_func_names())
    rng = np.random.default_rng()

    def random_fill(tensor):
        dtype = np.dtype(str(tensor.dtype))
        if dtype.kind == "f":
            data = rng.uniform(-1.0, 1.0, size=tensor.shape)
        elif dtype.kind in "iu":
            data = rng.integers(0, 8, size=tensor.shape)
        else:
            data = rng.integers(0, 2, size=tensor.shape)
        tensor.copyfrom(data.astype(dtype))

    for name in ("tvm.contrib.random.random_fill", "tvm.contrib.random.random_fill_for_measure"):
        if name not in names:
            tvm_ffi.register_global_func(name, random_fill)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--key", default="arm64-emu")
    p.add_argument("--tracker", help="HOST:PORT of an RPC tracker to register with")
    p.add_argument("--ready-file", help="written (JSON) once listening and registered")
    p.add_argument("--no-fork", action="store_true", help="serve sessions in this process (no timeout)")
    a = p.parse_args(argv)

    t0 = time.monotonic()
    # Bind first, so a taken port fails in a second rather than after the slow import.
    listen = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listen.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listen.bind((a.host, a.port))
    except OSError as e:
        log(f"cannot listen on {a.host}:{a.port}: {e.strerror}")
        return 1
    listen.listen(4)
    import platform

    import tvm  # load the runtime before accepting: the slow part under emulation

    log(f"python {platform.python_version()} on {platform.machine()}, tvm {tvm.__version__} "
        f"imported in {time.monotonic() - t0:.1f}s")
    register_fallbacks()
    log(f"listening on {a.host}:{a.port}")
    tracker = Tracker(a.tracker, a.key, a.port) if a.tracker else None
    if tracker:
        tracker.connect()
    if a.ready_file:
        tmp = a.ready_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump({"pid": os.getpid(), "port": a.port, "startup_s": round(time.monotonic() - t0, 2)}, f)
        os.replace(tmp, a.ready_file)

    need_offer = True
    while True:
        try:
            if tracker and tracker.sock is None:
                tracker.connect()
                need_offer = True
            if tracker and need_offer:
                tracker.offer()
                need_offer = False
            while True:
                if tracker and not select.select([listen], [], [], PING_PERIOD)[0]:
                    tracker.ping()
                    continue
                conn, peer = listen.accept()
                # Tracker clients bring the match key it handed out; direct ones the plain key (or none).
                keys = [*tracker.offered, a.key, ""] if tracker else [a.key, ""]
                shaken = handshake(conn, keys, a.key)
                if shaken is None:
                    conn.close()
                    continue
                used, opts = shaken
                break
        except OSError as e:  # tracker dropped: reconnect and register again
            log(f"tracker connection lost ({e}); reconnecting")
            if tracker:
                tracker.close()
            time.sleep(1)
            continue
        if tracker and used in tracker.offered:
            # The tracker handed this key out and now counts the board as busy: offer a fresh one after.
            tracker.offered.discard(used)
            need_offer = True
        log(f"session from {peer[0]}:{peer[1]}")
        t = time.monotonic()
        if a.no_fork:
            try:
                serve_session(conn)
            except Exception as e:  # noqa: BLE001 - a failed session must not stop the board
                log(f"session error: {e}")
            conn.close()
        else:
            run_forked(conn, opts, listen)
        log(f"session ended after {time.monotonic() - t:.1f}s")


if __name__ == "__main__":
    sys.exit(main())
