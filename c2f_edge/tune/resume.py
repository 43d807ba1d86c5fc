"""Resuming a tuning run: JSONDatabase appends each record as it is measured, so an interrupted run
(Ctrl-C, a board that drops) loses nothing; the next run counts what is there against --trials and
spends the rest on the least-tuned tasks first."""

from __future__ import annotations

import os
from pathlib import Path

from c2f_edge.backend.tuning_db import RECORD_FILE, WORKLOAD_FILE
from c2f_edge.tune.tasks import task_flops


def repair_tail(work_dir: Path) -> int:
    """Drop a half-written last line (a run killed mid-write) so the database loads. Returns lines dropped."""
    dropped = 0
    for name in (WORKLOAD_FILE, RECORD_FILE):
        f = work_dir / name
        if not f.is_file() or f.stat().st_size == 0:
            continue
        data = f.read_bytes()
        if data.endswith(b"\n"):
            continue
        keep = data[:data.rfind(b"\n") + 1]
        tmp = f.with_name(f".{name}.repair")
        tmp.write_bytes(keep)
        os.replace(tmp, f)
        dropped += 1
    return dropped


def task_record_counts(tasks, work_dir: Path) -> list[int]:
    """Records (measured trials, failed ones included) already in the work dir for each task."""
    if not (work_dir / WORKLOAD_FILE).is_file() or not (work_dir / RECORD_FILE).is_file():
        return [0] * len(tasks)
    from tvm.s_tir import meta_schedule as ms

    db = ms.database.JSONDatabase(path_workload=str(work_dir / WORKLOAD_FILE),
                                  path_tuning_record=str(work_dir / RECORD_FILE), allow_missing=False)
    records = db.get_all_tuning_records()
    out = []
    for t in tasks:
        mod = t.dispatched[0]
        if not db.has_workload(mod):
            out.append(0)
            continue
        wl = db.commit_workload(mod)  # exists: returns it, writes nothing
        out.append(sum(1 for r in records if r.workload.same_as(wl)))
    return out


def plan_resume(tasks, counts: list[int], trials: int, trials_per_round: int, max_tasks: int | None):
    """Order tasks for this run and say how many trials are left.

    Our scheduler first gives every task one round, in list order, so the tasks with the fewest
    records go first: after an interruption the remaining budget fills the gaps instead of
    re-measuring what is done. Returns (ordered task indices, trials left, trials done).
    """
    idx = list(range(len(tasks)))
    if max_tasks:
        # The heaviest tasks (by FLOPs x how often they run) matter most for a short run.
        idx = sorted(idx, key=lambda i: -tasks[i].weight * task_flops(tasks[i]))[:max_tasks]
    done = sum(counts[i] for i in idx)
    # Fewest records first; among equals the costliest kernels first, so a short run (or the rest of
    # an interrupted one) goes where the time is.
    cost = {i: tasks[i].weight * task_flops(tasks[i]) for i in idx}
    idx.sort(key=lambda i: (counts[i], -cost[i]))
    return idx, max(0, trials - done), done
