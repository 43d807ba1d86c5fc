"""A host RPC server that stands in for a slower board: every timed run takes DELAY seconds longer.

On a real board a measurement takes seconds, so a farm of boards scales tuning almost linearly; on this
2-core machine, host servers would only share the same two cores. A fixed delay per timed run makes the
measurement dominate, as it does on a Pi. The delay is real (the board sleeps, holding its session) and
is added to each result it reports, so a delayed board is also a slower board to `c2f-edge profile`.

    python -m c2f_edge.board.delayed_server --delay 0.5 --host 127.0.0.1 --port 9091 \\
        --tracker 127.0.0.1:9190 --key farm

Only for tests and benchmarks on one machine: its timings are the host's plus the delay.
"""

from __future__ import annotations

import argparse
import functools
import struct
import sys
import time


def _install_delay(delay_s: float) -> None:
    """Wrap the board's time evaluator, which the client calls by name over RPC. Runs in the server
    process before it forks a child per session, so every session inherits the wrapper (it is sent
    to that process pickled by reference, hence the argument rather than a global)."""
    import tvm_ffi

    original = tvm_ffi.get_global_func("runtime.RPCTimeEvaluator")

    def evaluator(mod, name, dev_type, dev_id, number, repeat, *rest):
        timed = original(mod, name, dev_type, dev_id, number, repeat, *rest)

        def run(*args):
            raw = bytes(timed(*args))  # `repeat` float64 seconds, each the mean of `number` runs
            time.sleep(delay_s * number * repeat)
            means = struct.unpack(f"{len(raw) // 8}d", raw)
            return bytearray(struct.pack(f"{len(means)}d", *(m + delay_s for m in means)))

        return tvm_ffi.convert(run)

    tvm_ffi.register_global_func("runtime.RPCTimeEvaluator", evaluator, override=True)


def main(argv: list[str] | None = None) -> int:
    from c2f_edge.board import rpc

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--delay", type=float, required=True, help="extra seconds per timed run")
    rpc.server_arguments(p, key="host")
    a = p.parse_args(argv)
    if a.delay < 0:
        p.error("--delay must be >= 0")
    return rpc.serve(a, functools.partial(_install_delay, a.delay))


if __name__ == "__main__":
    sys.exit(main())
