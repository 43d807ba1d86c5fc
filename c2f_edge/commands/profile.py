"""`c2f-edge profile`: time a compiled bundle on a board over TVM RPC (or here), or compare results."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from c2f_edge.commands._common import add_hash_arg
from c2f_edge.profile.fleet import OUTLIER_RATIO

ORDER = 60

EPILOG = """\
what it measures (on the board, with TVM's time evaluator):
  latency of `main` per inference: min, p50, p90, p99, mean, std over --repeat samples, each sample the
  mean of --number runs; the cold start (first call after loading) separately; throughput in images/s.
  --per-op: every distinct fused kernel timed alone on the board, as a table and bars, with its share.
  With --local also in the model's own sequence (`in model ms`, `x alone`): where a kernel loses to the
  caches the kernels before it left, and what the VM's builtins and dispatch take between kernels.
  Every result records the conditions: board key, CPU/cores where the board reveals them, threads,
  TVM versions, the bundle's sha256 and tuning state, the date. Timings from an emulated board are
  labelled EMULATED: they are not latencies of any device.

instruction counts (no board: --emulated alone):
  the aarch64 bundle runs here on a core that qemu emulates (--cpu, default the target's: cortex-a76 for
  rpi5, cortex-a72 for rpi4), one thread, one inference after a warm-up, counted by c2f-edge's qemu plugin
  (`make setup-system` installs it). Counts are exact and the same on any host; they are NOT times.
  Per class (NEON FMA by lanes, NEON loads/stores, scalar FP, loads, stores, branches) and, with --per-op,
  per kernel with its calls and share. --json writes them; --compare puts count results side by side.

robustness:
  --timeout S bounds every step (connect, upload, each chunk of samples, each kernel): a board that
  hangs or drops gives an error within S seconds; samples measured so far stay in --json with
  "complete": false, and the exit code is non-zero (3).

examples:
  c2f-edge profile --artifact build/host --local --repeat 20
  c2f-edge profile --artifact build/arm64 --rpc-tracker 127.0.0.1:9190 --rpc-key pi4 --threads 4 \\
      --per-op --json pi4.json --plot pi4.png
  c2f-edge profile --artifact build/arm64 --rpc 192.168.1.20:9090 --repeat 100 --cooldown-ms 50
  c2f-edge profile --artifact build/rpi5 --rpc-tracker 192.168.1.10:9190 --rpc-key rpi5 --all-boards \
      --json fleet.json                                   # every board under the key, side by side
  c2f-edge profile --artifact build/rpi5 --emulated --per-op --json rpi5-counts.json  # instructions per kernel
  c2f-edge profile --compare untuned.json tuned.json      # side by side, ratios vs the first
  c2f-edge profile --schema                               # the --json format, field by field
"""


def register(sub) -> None:
    p = sub.add_parser("profile", help="on-device latency (statistics, per-kernel breakdown, plots) over TVM RPC",
                       description="Upload a compiled bundle to a board over TVM RPC, load it with the Relax VM "
                                   "and time it there; or compare saved profile results.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", metavar="DIR", help="bundle directory written by `c2f-edge compile` "
                                                     "(model.so + manifest.json), e.g. build/host")
    where = p.add_argument_group("where to run (one of)")
    where.add_argument("--rpc-tracker", metavar="HOST:PORT", help="RPC tracker; needs --rpc-key")
    where.add_argument("--rpc-key", metavar="KEY", help="device key registered with the tracker (with --rpc: the "
                                                        "--key the server was started with, if any)")
    where.add_argument("--rpc", metavar="HOST:PORT", help="an RPC server started without a tracker")
    where.add_argument("--local", action="store_true", help="this machine, in-process (host bundles)")
    where.add_argument("--all-boards", action="store_true",
                       help="with --rpc-tracker: profile every board under --rpc-key (boards on different hosts "
                            "in parallel, boards sharing a host one after another), side by side, and flag a "
                            f"board whose p50 is above {OUTLIER_RATIO:g}x the fleet median")
    t = p.add_argument_group("timing")
    t.add_argument("--warmup", type=int, metavar="N", default=2, help="untimed runs after the cold start (default 2)")
    t.add_argument("--repeat", type=int, metavar="N", default=30, help="number of latency samples (default 30)")
    t.add_argument("--number", type=int, metavar="N", default=1, help="runs averaged into each sample (default 1)")
    t.add_argument("--min-repeat-ms", type=int, metavar="MS", default=0,
                   help="raise --number until one sample lasts this long (default 0: off)")
    t.add_argument("--cooldown-ms", type=int, metavar="MS", default=0, help="pause between samples, e.g. against thermal "
                                                              "throttling (default 0)")
    t.add_argument("--threads", type=int, metavar="N", help="board thread pool size (runtime.config_threadpool); "
                                               "default: the board's TVM default")
    t.add_argument("--affinity", choices=["big", "little"], default="big",
                   help="with --threads on big.LITTLE boards: which cluster (default big)")
    t.add_argument("--per-op", action="store_true", help="also time every fused kernel on the board")
    t.add_argument("--timeout", type=float, metavar="S", default=300.0,
                   help="seconds any one step may take before the board counts as dropped (default 300)")
    t.add_argument("--emulated", action=argparse.BooleanOptionalAction, default=None,
                   help="alone: count instructions on an emulated core here (see below); with a board: label "
                        "it emulated (default: detected from c2f-edge's emulator key '*-emu')")
    t.add_argument("--cpu", metavar="CORE", help="with --emulated alone: the core to emulate (default: the "
                                                 "target's mcpu), e.g. cortex-a76, cortex-a72")
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="PATH", help="write the result here (format: --schema), also when incomplete")
    o.add_argument("--plot", metavar="PATH", help="write a PNG: latency histogram and per-kernel bars")
    o.add_argument("--compare", nargs="+", metavar="JSON", help="print saved results side by side and exit")
    o.add_argument("--schema", action="store_true", help="print the JSON schema and exit")
    add_hash_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from c2f_edge.core.artifacts import write_json
    from c2f_edge.core.errors import UsageError
    from c2f_edge.profile import ProfileConfig, profile, raise_if_incomplete, report

    if args.schema:
        print(report.SCHEMA_DOC, end="")
        return 0
    if args.compare:
        if len(args.compare) < 2:
            raise UsageError("--compare needs at least two result files", hint="c2f-edge profile --compare a.json b.json")
        print(report.compare([report.load_result(p) for p in args.compare]), end="")
        return 0
    if not args.artifact:
        raise UsageError("--artifact DIR is required", hint="e.g. --artifact build/host (written by `c2f-edge compile`)")
    modes = [m for m, on in (("tracker", args.rpc_tracker), ("direct", args.rpc), ("local", args.local)) if on]
    if not modes and args.emulated:
        return _counts(args)
    if args.cpu:
        raise UsageError("--cpu picks the emulated core for instruction counts (--emulated without a board)",
                         hint="drop --cpu, or drop the board options to count instructions here")
    if len(modes) != 1:
        raise UsageError("choose exactly one of --rpc-tracker HOST:PORT --rpc-key KEY, --rpc HOST:PORT, --local",
                         hint="e.g. --rpc-tracker 127.0.0.1:9190 --rpc-key host")
    if args.rpc_key and modes[0] == "local":
        raise UsageError("--rpc-key goes with --rpc-tracker (or --rpc), not --local", hint="drop --rpc-key")
    cfg = ProfileConfig(artifact=args.artifact, mode=modes[0], tracker=args.rpc_tracker, key=args.rpc_key,
                        addr=args.rpc, warmup=args.warmup, repeat=args.repeat, number=args.number,
                        min_repeat_ms=args.min_repeat_ms, cooldown_ms=args.cooldown_ms, threads=args.threads,
                        affinity=args.affinity, per_op=args.per_op, timeout=args.timeout, emulated=args.emulated)
    if args.all_boards:
        return _fleet(cfg, args)
    result = profile(cfg)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, result)
    if args.plot and (result["samples_ms"] or result["per_op"]):
        from c2f_edge.profile.plot import plot

        plot(result, args.plot)
    if result["samples_ms"] or result["complete"]:
        print(report.markdown(result), end="")
    if args.json:
        print(f"result: {args.json}", file=sys.stderr)
    raise_if_incomplete(result)
    return 0


def _counts(args) -> int:
    from c2f_edge.core.artifacts import write_json
    from c2f_edge.core.errors import UsageError
    from c2f_edge.profile.counts import CountConfig, count, markdown

    for flag, on in (("--all-boards", args.all_boards), ("--plot", args.plot), ("--rpc-key", args.rpc_key)):
        if on:
            raise UsageError(f"{flag} is for timing a board; --emulated alone counts instructions here",
                             hint=f"drop {flag}, or add --rpc-tracker HOST:PORT to time an emulated board")
    print(f"counting one inference of {args.artifact} on an emulated core (qemu: about a minute for "
          "Conv2Former-N) ...", file=sys.stderr)
    result = count(CountConfig(artifact=args.artifact, cpu=args.cpu, per_op=args.per_op, timeout=args.timeout))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, result)
    print(markdown(result), end="")
    if args.json:
        print(f"result: {args.json}", file=sys.stderr)
    return 0


def _fleet(cfg, args) -> int:
    from c2f_edge.core.artifacts import write_json
    from c2f_edge.core.errors import RemoteError, UsageError
    from c2f_edge.profile import report
    from c2f_edge.profile.fleet import profile_fleet

    if cfg.mode != "tracker":
        raise UsageError("--all-boards needs --rpc-tracker HOST:PORT --rpc-key KEY",
                         hint="the tracker knows which boards are registered under the key")
    if args.plot:
        raise UsageError("--plot draws one board; --all-boards writes one table", hint="drop --plot, or profile "
                         "one board at a time")

    def done(addr, r):
        p50 = r["latency_ms"]["p50"]
        print(f"  {addr}: {'done' if r['complete'] else 'INCOMPLETE'}, p50 "
              + (f"{p50:.3f} ms" if p50 is not None else "n/a"), file=sys.stderr)

    fleet = profile_fleet(cfg, on_board=done)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json, fleet)
    print(report.fleet_markdown(fleet), end="")
    if args.json:
        print(f"result: {args.json}", file=sys.stderr)
    if fleet["incomplete"]:
        raise RemoteError(f"{len(fleet['incomplete'])} of {len(fleet['boards'])} board(s) did not finish: "
                          f"{', '.join(fleet['incomplete'])}",
                          hint="check those boards and their server logs; the others' results are complete")
    return 0
