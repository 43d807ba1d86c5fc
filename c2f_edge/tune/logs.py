"""MetaSchedule's logs for a tuning run, set up without touching the caller's logging."""

from __future__ import annotations

import contextlib
import logging
import sys
from pathlib import Path

MS_LOGGER = "tvm.s_tir.meta_schedule"


@contextlib.contextmanager
def task_logs(work_dir: Path, task_names: list[str], verbose: bool):
    """MetaSchedule's logs in WORK_DIR/logs/ (one file per task, one for the scheduler), and on the
    console only with -v. Yields the per-task loggers.

    MetaSchedule's own setup (`get_loggers_from_work_dir`) is not used: it rebuilds the process's
    logging with `dictConfig` from the names of the handlers already on its logger, so an unnamed one
    (pytest's log capture, a notebook's) crashes it, and it closes every other handler in the process.
    Here handlers are only added, and removed again on exit; the caller's handlers stay as they were.
    """
    log_dir = work_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    fmt = logging.Formatter("%(asctime)s [%(levelname)s] %(message)s", "%Y-%m-%d %H:%M:%S")
    root = logging.getLogger(MS_LOGGER)
    width = len(str(max(len(task_names) - 1, 0)))
    # Same names as MetaSchedule's, so the files land where its docs say.
    names = [f"{MS_LOGGER}.task_{i:0{width}d}_{n[:100]}" for i, n in enumerate(task_names)]
    loggers = [logging.getLogger(n) for n in names]
    saved = [(lg, lg.level, lg.propagate) for lg in (root, *loggers)]
    added = []

    def attach(logger, handler, level):
        handler.setLevel(level)
        handler.setFormatter(fmt)
        logger.addHandler(handler)
        added.append((logger, handler))

    attach(root, logging.FileHandler(log_dir / f"{MS_LOGGER}.task_scheduler.log"), logging.DEBUG)
    attach(root, logging.StreamHandler(sys.stderr), logging.INFO if verbose else logging.WARNING)
    root.setLevel(logging.DEBUG)
    root.propagate = False  # the scheduler's tables are for the log file, not the application's handlers
    for name, lg in zip(names, loggers):
        attach(lg, logging.FileHandler(log_dir / f"{name}.log"), logging.DEBUG)
        lg.setLevel(logging.DEBUG)
        lg.propagate = False
    try:
        yield loggers
    finally:
        for lg, h in added:
            lg.removeHandler(h)
            h.close()
        for lg, level, propagate in saved:
            lg.setLevel(level)
            lg.propagate = propagate
