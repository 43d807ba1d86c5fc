"""Carrying a tuning log over a `PIPELINE_VERSION` bump: keep the records of the kernels that did not change.

A bump means some kernels changed, not all: after the GELU refit 28 of Conv2Former-N's 43 kernels were
the same. A record is a schedule trace of one workload (a kernel's TIR); the same trace on the same TIR,
with the same TVM version and target (still checked), builds the same kernel, so its measured time
stands. The records of workloads the graph no longer has are dropped (they could never match again).
The search then starts from the kernels with the fewest records, the changed ones; the default schedule
of every kernel is measured again where the rules changed it (tasks.seed_default_schedules).

The log is rewritten in place through a journal: the new files are written to WORK_DIR/.carry/, marked
complete, then moved in, meta.json last. A reader sees the old meta.json (a stale log, skipped) until the
new database is whole; a run cut short mid-move is finished by the next one (`finish`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from c2f_edge.backend.pipeline import PIPELINE_VERSION
from c2f_edge.backend.tuning_db import (
    META,
    RECORD_FILE,
    WORKLOAD_FILE,
    TuningLog,
    mismatch,
    read_log,
    write_meta,
)

JOURNAL = ".carry"
_DONE = "complete"


def stale_by_version_only(log: TuningLog, target_json: dict, graph_sig: str, precision_name: str):
    """The pipeline version `log` was tuned at, if that is the only reason it does not fit; else None."""
    old = log.meta.get("pipeline_version")
    if old is None or old == PIPELINE_VERSION:
        return None
    as_today = TuningLog(log.path, {**log.meta, "pipeline_version": PIPELINE_VERSION})
    return None if mismatch(as_today, target_json, graph_sig, precision_name) else old


def carry_over(work_dir: Path, tasks) -> dict:
    """Rewrite the log in `work_dir` to the records of `tasks`' workloads; returns what was kept and dropped."""
    from tvm.s_tir import meta_schedule as ms

    old = ms.database.JSONDatabase(path_workload=str(work_dir / WORKLOAD_FILE),
                                   path_tuning_record=str(work_dir / RECORD_FILE), allow_missing=False)
    records = old.get_all_tuning_records()
    journal = work_dir / JOURNAL
    shutil.rmtree(journal, ignore_errors=True)  # an unfinished journal: the old files are still whole
    journal.mkdir()
    new = ms.database.JSONDatabase(path_workload=str(journal / WORKLOAD_FILE),
                                   path_tuning_record=str(journal / RECORD_FILE), allow_missing=True)
    seen, kept = [], 0
    for t in tasks:
        mod = t.dispatched[0]
        if not old.has_workload(mod):
            continue
        wl = old.commit_workload(mod)  # exists: returns it, writes nothing
        if any(wl.same_as(s) for s in seen):
            continue
        seen.append(wl)
        nwl = new.commit_workload(mod)
        for r in records:
            if r.workload.same_as(wl):
                new.commit_tuning_record(ms.database.TuningRecord(r.trace, nwl, run_secs=r.run_secs,
                                                                  target=r.target, args_info=r.args_info))
                kept += 1
    meta = read_log(work_dir).meta
    report = {"from_pipeline_version": meta.get("pipeline_version"),
              "to_pipeline_version": PIPELINE_VERSION, "kernels_kept": len(seen),
              "kernels_new": len(tasks) - len(seen), "records_kept": kept, "records_dropped": len(records) - kept}
    shutil.copy2(work_dir / META, journal / META)
    write_meta(journal, trials=kept, carried_over=[*meta.get("carried_over", []), report])
    (journal / _DONE).touch()
    finish(work_dir)
    return report


def finish(work_dir: Path) -> bool:
    """Move a complete journal's files into place (meta.json last); drop an incomplete one. True if moved."""
    journal = work_dir / JOURNAL
    if not journal.is_dir():
        return False
    done = (journal / _DONE).is_file()
    if done:
        for name in (WORKLOAD_FILE, RECORD_FILE, META):
            if (journal / name).is_file():
                os.replace(journal / name, work_dir / name)
    shutil.rmtree(journal, ignore_errors=True)
    return done
