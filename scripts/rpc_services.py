#!/usr/bin/env python
"""Start, stop and inspect the local TVM RPC services from the shell (for users and .ci/run).

  python scripts/rpc_services.py tracker start                 # prints the handle as JSON, writes a pid file
  python scripts/rpc_services.py server start --tracker 127.0.0.1:9190 --key host
  python scripts/rpc_services.py board start --tracker 127.0.0.1:9190 --key arm64-emu   # emulated aarch64
  python scripts/rpc_services.py board status
  python scripts/rpc_services.py board stop                    # kills the whole process group

Everything binds 127.0.0.1 and picks a free port unless --port is given. Pid files (JSON handles) and logs
live in ${C2F_EDGE_CACHE:-~/.cache/c2f-edge}/run/; --tracker also accepts a tracker's pid file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from c2f_edge.board import emulator, rpc
from c2f_edge.core.errors import C2FError, report


def _tracker_addr(value: str | None) -> str | None:
    """HOST:PORT as given, or read from a tracker's pid file."""
    if value and Path(value).is_file():
        return rpc.Service.from_json(json.loads(Path(value).read_text())).address
    return value


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("service", choices=["tracker", "server", "board"],
                   help="tracker: TVM RPC tracker; server: host RPC server; board: emulated aarch64 RPC server")
    p.add_argument("action", choices=["start", "stop", "status"])
    p.add_argument("--host", default=rpc.DEFAULT_HOST, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: a free one)")
    p.add_argument("--tracker", help="HOST:PORT of the tracker to register with, or its pid file")
    p.add_argument("--key", help="device key (default: host for server, arm64-emu for board)")
    p.add_argument("--pid-file", help="where to record the handle (default: <cache>/run/<service>.json)")
    p.add_argument("--timeout", type=float, help="seconds to wait for readiness")
    a = p.parse_args(argv)
    pid_file = Path(a.pid_file) if a.pid_file else rpc.run_dir() / f"{a.service}.json"

    if a.action == "stop":
        was = rpc.stop(pid_file)
        print(f"{a.service}: {'stopped' if was else 'was not running'}")
        return 0
    if a.action == "status":
        if not pid_file.is_file():
            print(f"{a.service}: not running (no {pid_file})")
            return 1
        svc = rpc.Service.from_json(json.loads(pid_file.read_text()))
        up = svc.is_running()
        print(json.dumps({**svc.to_json(), "running": up}, indent=2))
        return 0 if up else 1

    if pid_file.is_file():
        old = rpc.Service.from_json(json.loads(pid_file.read_text()))
        if old.is_running():
            raise C2FError(f"a {a.service} is already running at {old.address} (pid {old.pid})",
                           hint=f"stop it first: python scripts/rpc_services.py {a.service} stop")
    kw = {"host": a.host, "port": a.port, "pid_file": pid_file, "name": a.service}
    if a.timeout:
        kw["timeout"] = a.timeout
    tracker = _tracker_addr(a.tracker)
    if a.service == "tracker":
        svc = rpc.start_tracker(**kw)
    elif a.service == "server":
        svc = rpc.start_host_server(tracker=tracker, key=a.key or "host", **kw)
    else:
        svc = emulator.start_board(tracker=tracker, key=a.key or emulator.DEFAULT_KEY, **kw)
    print(json.dumps(svc.to_json(), indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except C2FError as e:
        sys.exit(report(e))
