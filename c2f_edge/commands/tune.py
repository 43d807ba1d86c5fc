"""`c2f-edge tune`: MetaSchedule auto-tuning, on this CPU, on a board over RPC, or on an emulated core."""

from __future__ import annotations

import argparse

from c2f_edge.commands._common import add_hash_arg, add_model_args

ORDER = 25
DEFAULT_ONNX = "build/onnx/model.onnx"

EPILOG = """\
writes (default WORK_DIR = tuning_logs/<target>/):
  database_workload.json        MetaSchedule JSON database: the kernels (workloads) ...
  database_tuning_record.json   ... and one line per measured candidate, appended as measured
  meta.json                     TVM version, target JSON, model graph signature, trials, tuning time,
                                and the machine it was measured on
  logs/                         MetaSchedule's own per-task logs (not needed for replay)

`c2f-edge compile --target T` then applies tuning_logs/<T>/ automatically, if it matches this TVM
version, target and model graph; replaying a log measures nothing. Commit the log to share it.

Interrupt with Ctrl-C (or lose the board) at any time: the records measured so far are kept. Run the
same command again to resume: --trials is the total, so only the rest is measured, least-tuned
kernels first.

After an upgrade of c2f-edge that changed some kernels (a new PIPELINE_VERSION), tuning into the same
directory carries its log over: the records of the kernels that did not change are kept, those of the
changed ones dropped, and --trials counts from what is kept, so the rest goes to the changed kernels.
A log for another TVM version, target, precision or model graph is refused, untouched.

A farm: with --rpc-tracker, every board registered under --rpc-key measures at once (--boards N caps
it). A board that drops costs only the candidates it was measuring: they are measured again on the
others. When the last board is gone, tuning stops as on Ctrl-C, and resumes the same way.

Without a board (--emulated): each round's candidates run under qemu on the target's core (rpi5: Cortex-A76,
rpi4: A72), one thread, counted by c2f-edge's plugin, and score their cycles as estimated by its cycle model
(see the README: a throughput bound, blind to caches and memory). Deterministic, unlike a board; meta.json
records that the costs are estimates, from which model and core. Needs `make setup-system`.

Untuned kernels are slow (seconds per image on a small CPU); about 1,000 trials bring this model
close to ONNX Runtime. On 2 cores that is 15-20 minutes of tuning.

examples:
  c2f-edge tune --target host --trials 1000 --onnx build/onnx/model.onnx
  c2f-edge tune --target rpi4 --trials 1500 --rpc-tracker 192.168.1.10:9190 --rpc-key rpi4
  c2f-edge tune --target rpi5 --trials 3000 --rpc-tracker 192.168.1.10:9190 --rpc-key rpi5 --boards 4
  c2f-edge tune --target arm64 --rpc 127.0.0.1:9090 --trials 200 --work-dir /tmp/arm64-try
  c2f-edge tune --target rpi5 --emulated --trials 500      # no Pi: estimated cycles on an emulated A76
  c2f-edge tune --target rpi5 --emulated --precision fp16  # the fp16 build's kernels: tuning_logs/rpi5-fp16/
"""


def register(sub) -> None:
    p = sub.add_parser("tune", help="auto-tune the model's kernels for a target (MetaSchedule)",
                       description="Search for fast kernel schedules with TVM MetaSchedule, measuring each "
                                   "candidate on this CPU or on the board over TVM RPC, and save them as a "
                                   "replayable tuning log that `c2f-edge compile` applies.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", required=True, help="target name (see `c2f-edge targets`)")
    p.add_argument("--trials", type=int, default=1000,
                   help="total measured candidates for the work dir, including earlier runs (default 1000)")
    p.add_argument("--onnx", metavar="PATH", help=f"exported model (default {DEFAULT_ONNX}, or exported from the model options)")
    add_model_args(p)
    r = p.add_argument_group("where to measure (default: this CPU)")
    r.add_argument("--rpc-tracker", metavar="HOST:PORT", help="TVM RPC tracker the board is registered with")
    r.add_argument("--rpc-key", metavar="KEY", help="the board's key at the tracker (with --rpc-tracker)")
    r.add_argument("--rpc", metavar="HOST:PORT", help="one RPC server, without a tracker")
    r.add_argument("--boards", type=int, metavar="N",
                   help="with --rpc-tracker: measure on at most N of the key's boards at once (default: all)")
    r.add_argument("--emulated", action="store_true",
                   help="no board: score each candidate by its estimated cycles on an emulated core (qemu and "
                        "c2f-edge's cycle model; aarch64 targets)")
    r.add_argument("--cpu", metavar="CORE", help="with --emulated: the core (default: the target's, e.g. cortex-a76 "
                                                 "for rpi5)")
    p.add_argument("--precision", choices=("fp32", "fp16"), default="fp32",
                   help="tune the kernels of `compile --precision fp16` (a log per precision: the default work "
                        "dir is then tuning_logs/<target>-fp16/; default fp32)")
    p.add_argument("--work-dir", metavar="DIR", help="tuning log directory (default tuning_logs/<target>/)")
    p.add_argument("--cross-compiler", metavar="CMD",
                   help="linker for the candidates of a cross target (default: the target's, as in compile)")
    p.add_argument("--trials-per-round", type=int, default=16,
                   help="candidates measured per kernel per round (default 16; on a farm, rounded up to a multiple "
                        "of the boards); the search chooses them from 32x as many, at most 512")
    p.add_argument("--max-tasks", type=int, metavar="N",
                   help="tune only the N heaviest kernels (a quick look; the others stay untuned)")
    add_hash_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import sys

    from c2f_edge.core.errors import UsageError
    from c2f_edge.tune import TuneConfig, tune

    if args.trials_per_round < 1:
        raise UsageError("--trials-per-round must be >= 1", hint="e.g. --trials-per-round 16")
    if not args.onnx and not (args.weights or args.checkpoint):
        from pathlib import Path

        if not Path(DEFAULT_ONNX).is_file():  # same default as compile
            raise UsageError(f"no model: no --onnx, and {DEFAULT_ONNX} does not exist",
                             hint="pass --onnx PATH, or --weights synthetic / --checkpoint PATH to export one")
        args.onnx = DEFAULT_ONNX
    if args.weights == "synthetic":
        from c2f_edge.models.weights import SYNTHETIC_WARNING

        print(f"note: {SYNTHETIC_WARNING} (a tuning log depends on the graph, not the weights)", file=sys.stderr)
    cfg = TuneConfig(target=args.target, trials=args.trials, onnx=args.onnx, work_dir=args.work_dir,
                     rpc_tracker=args.rpc_tracker, rpc_key=args.rpc_key, rpc=args.rpc, boards=args.boards,
                     emulated=args.emulated, cpu=args.cpu,
                     trials_per_round=args.trials_per_round, max_tasks=args.max_tasks,
                     cross_compiler=args.cross_compiler, verbose=args.verbose, precision=args.precision,
                     model={"variant": args.variant, "checkpoint": args.checkpoint, "weights": args.weights,
                            "seed": args.seed})
    log = tune(cfg)
    m = log.meta
    print(f"tuning log {log.path}: {log.n_records} records, {m.get('trials')} trials, "
          f"{m.get('tuning_time_s')} s of tuning")
    print(f"next: c2f-edge compile --target {args.target}"
          + (f" --precision {args.precision}" if args.precision != "fp32" else "")
          + (f" --tuning-log {log.path}" if args.work_dir else "") + (f" --onnx {args.onnx}" if args.onnx else ""))
    return 0
