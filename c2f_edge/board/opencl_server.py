"""A local OpenCL board: a TVM RPC server on this machine with our OpenCL runtime loaded (board.opencl).

A user with a Mali or Adreno phone tunes and profiles over RPC; this server stands in for the phone, so
every code path between the command and the device runs for real. Bundles for it are built for the test
target `opencl-x86` (OpenCL device code, this machine's CPU as host). Its timings are PoCL's on this CPU
and say nothing about any GPU.

    python -m c2f_edge.board.opencl_server --host 127.0.0.1 --port 9092 --tracker 127.0.0.1:9190 --key opencl
"""

from __future__ import annotations

import argparse
import subprocess
import sys


def _load_runtime() -> None:
    """In the server process, before it forks a child per session: every session has the runtime. Only
    the library: the driver starts in each session, since its threads would not survive the fork."""
    from c2f_edge.board import opencl

    opencl.load_library()


def main(argv: list[str] | None = None) -> int:
    from c2f_edge.board import rpc

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    rpc.server_arguments(p, key="opencl")
    a = p.parse_args(argv)
    # Fail here, in one line, rather than in the first session: the device is probed in a child process,
    # so that this one never starts the driver.
    probe = subprocess.run([sys.executable, "-m", "c2f_edge.board.opencl", "setup"], check=False,
                           stdout=subprocess.DEVNULL)
    if probe.returncode:
        return probe.returncode
    _load_runtime()
    return rpc.serve(a, _load_runtime)


if __name__ == "__main__":
    sys.exit(main())
