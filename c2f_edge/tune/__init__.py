"""Stage 3, tune: MetaSchedule auto-tuning for a target, on this CPU or a board over RPC.

    stage.py    tune(TuneConfig(...)): resolve, extract tasks, search, write tuning_logs/<target>/
    tasks.py    the model's tasks (the kernels a build compiles), their default schedules as first records
    measure.py  where candidates are measured (this CPU, a board over RPC) and with how many threads
    search.py   the task scheduler (saves every round) and the progress bar
    resume.py   picking up an interrupted run where it stopped
    carry.py    a log of an older PIPELINE_VERSION: keep the records of the kernels that did not change
    logs.py     MetaSchedule's per-task logs, without touching the caller's logging
"""

from c2f_edge.tune.stage import TuneConfig, tune

__all__ = ["TuneConfig", "tune"]
