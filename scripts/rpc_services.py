#!/usr/bin/env python
"""Start, stop and inspect the local TVM RPC services from the shell (for users and .ci/run).

  python scripts/rpc_services.py tracker start                 # prints the handle as JSON, writes a pid file
  python scripts/rpc_services.py server start --tracker 127.0.0.1:9190 --key host
  python scripts/rpc_services.py server start --tracker 127.0.0.1:9190 --key farm --count 3 --delay 0.5
                                                               # a farm of 3 host "boards", each timed run
                                                               # 0.5 s longer (stand-ins for slow boards)
  python scripts/rpc_services.py server start --tracker 127.0.0.1:9190 --key opencl --opencl
                                                               # a local OpenCL board: our OpenCL runtime on
                                                               # PoCL; runs bundles built --target opencl-x86
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
    p.add_argument("--count", type=int, default=1, help="server start: this many servers under one key (a farm)")
    p.add_argument("--opencl", action="store_true",
                   help="server start: a local OpenCL board (our OpenCL runtime loaded; a test stand-in for a "
                        "Mali or Adreno phone, whose timings mean nothing)")
    p.add_argument("--delay", type=float, default=0.0,
                   help="server start: extra seconds per timed run, a stand-in for a slower board")
    a = p.parse_args(argv)
    pid_file = Path(a.pid_file) if a.pid_file else rpc.run_dir() / f"{a.service}.json"
    # A farm's servers have pid files of their own: server-1.json, server-2.json, ...
    farm = sorted(pid_file.parent.glob(f"{pid_file.stem}-[0-9]*.json"))

    if a.action == "stop":
        for f in [pid_file, *farm]:
            if f.is_file() or f == pid_file:
                was = rpc.stop(f)
                print(f"{f.stem}: {'stopped' if was else 'was not running'}")
        return 0
    if a.action == "status":
        files = [f for f in [pid_file, *farm] if f.is_file()]
        if not files:
            print(f"{a.service}: not running (no {pid_file})")
            return 1
        up = []
        for f in files:
            svc = rpc.Service.from_json(json.loads(f.read_text()))
            up.append(svc.is_running())
            print(json.dumps({**svc.to_json(), "running": up[-1]}, indent=2))
        return 0 if all(up) else 1

    if a.count < 1 or a.delay < 0:
        raise C2FError("--count must be >= 1 and --delay >= 0", hint="e.g. --count 3 --delay 0.5")
    if (a.count > 1 or a.delay or a.opencl) and a.service != "server":
        raise C2FError("--count, --delay and --opencl are for `server start`", hint="start a farm of host servers")
    files = [pid_file] if a.count == 1 else [pid_file.with_name(f"{pid_file.stem}-{i}.json")
                                             for i in range(1, a.count + 1)]
    for f in files:
        if f.is_file():
            old = rpc.Service.from_json(json.loads(f.read_text()))
            if old.is_running():
                raise C2FError(f"a {a.service} is already running at {old.address} (pid {old.pid})",
                               hint=f"stop it first: python scripts/rpc_services.py {a.service} stop")
    tracker = _tracker_addr(a.tracker)
    for f in files:
        kw = {"host": a.host, "port": a.port if a.count == 1 else None, "pid_file": f, "name": f.stem}
        if a.timeout:
            kw["timeout"] = a.timeout
        if a.service == "tracker":
            svc = rpc.start_tracker(**kw)
        elif a.service == "server":
            svc = rpc.start_host_server(tracker=tracker, key=a.key or ("opencl" if a.opencl else "host"),
                                        delay_s=a.delay, opencl=a.opencl, **kw)
        else:
            svc = emulator.start_board(tracker=tracker, key=a.key or emulator.DEFAULT_KEY, **kw)
        print(json.dumps(svc.to_json(), indent=2))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except C2FError as e:
        sys.exit(report(e))
