#!/usr/bin/env python
"""Tuning throughput on a farm: the same budget measured on 1 board and on N boards under one key.

On this machine the "boards" are host RPC servers that stand in for slow boards: every timed run takes
--delay seconds longer (c2f_edge.board.delayed_server), so measurement dominates as it does on a Pi,
and the 2 local cores (search, builds) are not what is measured. Everything runs on 127.0.0.1.

    python scripts/bench_farm.py                      # Conv2Former-N's 3 heaviest kernels, 1 vs 3 boards
    python scripts/bench_farm.py --boards 4 --delay 1 --trials 48

Prints trials per minute of the tuning stage (meta.json's tuning_time_s: search, builds and
measurement, not the task extraction before it) for each farm size, and the ratio.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--onnx", help="the model (default build/onnx/model.onnx, exported, synthetic, if missing)")
    p.add_argument("--boards", type=int, default=3, help="the farm's size (default 3); compared with 1 board")
    p.add_argument("--delay", type=float, default=2.0, help="extra seconds per timed run of a board (default 2)")
    p.add_argument("--trials", type=int, default=57, help="trials per run, the same for both (default 57: the 3 "
                                                          "default schedules, then a round of 18 per kernel)")
    p.add_argument("--trials-per-round", type=int, default=18, help="candidates per round (default 18; tune rounds "
                                                                    "it up to a multiple of the boards)")
    p.add_argument("--max-tasks", type=int, default=3,
                   help="kernels tuned, heaviest first (default 3: while one kernel's candidates are measured, "
                        "the next kernel's are searched and built, as when tuning the whole model)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    return p.parse_args(argv)


def tune_on(tracker, key: str, n_boards: int, onnx: Path, args, work: Path) -> dict:
    from c2f_edge.tune import TuneConfig, tune

    t0 = time.perf_counter()
    log = tune(TuneConfig(target="host", trials=args.trials, onnx=str(onnx), work_dir=str(work),
                          trials_per_round=args.trials_per_round, rpc_tracker=tracker.address, rpc_key=key,
                          boards=n_boards, max_tasks=args.max_tasks))
    wall = time.perf_counter() - t0
    tuning_s = float(log.meta["tuning_time_s"])
    return {"boards": log.meta["machine"]["boards"], "trials": log.n_records, "tuning_s": round(tuning_s, 1),
            "wall_s": round(wall, 1), "trials_per_min": round(60 * log.n_records / tuning_s, 2)}


def main(argv=None) -> int:
    from c2f_edge.board import rpc

    args = parse_args(argv)
    from c2f_edge.export import ensure_onnx

    onnx = ensure_onnx(args.onnx)
    key = "bench-farm"
    with rpc.tracker() as tracker, tempfile.TemporaryDirectory(prefix="c2f-bench-farm-") as d:
        boards = [rpc.start_host_server(tracker=tracker, key=key, delay_s=args.delay) for _ in range(args.boards)]
        try:
            rows = [tune_on(tracker, key, n, onnx, args, Path(d) / f"boards-{n}") for n in (1, args.boards)]
        finally:
            for b in boards:
                b.stop()
    one, farm = rows
    ratio = farm["trials_per_min"] / one["trials_per_min"]
    print(f"\nConv2Former-N ({args.max_tasks} kernel(s)), {args.trials} trials per run, {args.trials_per_round} per "
          f"round, boards = host RPC servers with {args.delay:g} s extra per timed run, one tracker key")
    print(f"{'boards':>6} {'trials':>7} {'tuning s':>9} {'trials/min':>11}")
    for r in rows:
        print(f"{r['boards']:>6} {r['trials']:>7} {r['tuning_s']:>9.1f} {r['trials_per_min']:>11.2f}")
    print(f"{args.boards} boards vs 1: {ratio:.2f}x the trials per minute")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows, "ratio": round(ratio, 3)}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
