"""Stage 3, tune: MetaSchedule auto-tuning of the compiled model's kernels, locally or on a board over RPC.

    log = tune(TuneConfig(target="host", trials=1000, onnx="build/onnx/model.onnx"))

The work dir (default `tuning_logs/<target>/`) is a MetaSchedule JSON database plus `meta.json`
(see backend.tuning_db). Records are saved as they are measured, so a run that is interrupted
(Ctrl-C, a board that drops) loses nothing: the same command again resumes it (tune.resume).
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from c2f_edge.backend import precision, tuning_db
from c2f_edge.backend.targets import is_gpu
from c2f_edge.backend.tuning_db import RECORD_FILE, WORKLOAD_FILE, TuningLog, mismatch, read_log, write_meta
from c2f_edge.core.errors import ArtifactError, RemoteError, UsageError, first_line
from c2f_edge.tune import carry
from c2f_edge.tune.logs import task_logs
from c2f_edge.tune.measure import (
    emulated_machine,
    host_machine,
    import_intrinsics_without_cuda,
    make_runner,
    measure_threads,
    remote_machine,
    resolve_target,
)
from c2f_edge.tune.resume import plan_resume, repair_tail, task_record_counts
from c2f_edge.tune.search import make_progress, make_scheduler
from c2f_edge.tune.tasks import (
    extract_tasks,
    model_identity,
    search_population,
    seed_default_schedules,
    tune_contexts,
    without_split,
)

# Candidates measured per task per round. 16 keeps rounds short on a 2-core machine.
TRIALS_PER_ROUND = 16
# Every board's measuring sessions (farm.TrackerSession): which boards measured, and when.
FARM_JOURNAL = "logs/farm_sessions.jsonl"


@dataclass
class TuneConfig:
    target: str = "host"
    trials: int = 1000
    onnx: str | None = None
    work_dir: str | None = None
    rpc_tracker: str | None = None   # HOST:PORT of a tracker (with rpc_key)
    rpc_key: str | None = None
    rpc: str | None = None           # HOST:PORT of one RPC server, no tracker
    boards: int | None = None        # with rpc_tracker: measure on at most N of the key's boards at once
    emulated: bool = False           # score candidates by estimated cycles on an emulated core (tune.emulated)
    cpu: str | None = None           # with emulated: the core (default: the target's mcpu)
    trials_per_round: int = TRIALS_PER_ROUND
    max_tasks: int | None = None     # tune only the N heaviest tasks (tests, quick looks)
    builder_workers: int | None = None
    build_timeout_s: float = 60.0
    run_timeout_s: float = 60.0
    session_timeout_s: int = 120
    seed: int | None = 0
    cross_compiler: str | None = None  # override the target's linker for candidates (as in compile)
    precision: str = "fp32"            # "fp16": tune the kernels of the fp16 build (compile --precision fp16)
    verbose: bool = False              # MetaSchedule's own log on the console (always in WORK_DIR/logs)
    # Where the model comes from when no --onnx is given (exported into the work dir's cache).
    model: dict = field(default_factory=dict)


@dataclass
class _Job:
    """One tune() call, resolved: what is tuned, where it is measured, where the log goes."""

    cfg: TuneConfig
    target_json: dict
    fcompile: object
    onnx_path: Path
    ident: dict
    work_dir: Path
    machine: dict
    tasks: list = field(default_factory=list)
    order: list[int] = field(default_factory=list)
    prev_time_s: float = 0.0
    carry_from: int | None = None  # the work dir's log is of this older pipeline version: carry it over
    split_reduction: bool = False  # the target's builds take the split reduction: its kernels are not tuned
    runner: object = None  # set by _search; a FarmRunner counts the candidates it measured again

    @property
    def remote(self) -> bool:
        return bool(self.cfg.rpc or self.cfg.rpc_tracker)

    @property
    def emulated(self) -> bool:
        return self.cfg.emulated

    def save_meta(self, trials_total: int, elapsed: float) -> None:
        # Every measured candidate leaves a record (failures too), so the file is the ground truth
        # even when an interrupt lands between the database write and our progress callback.
        cfg = self.cfg
        trials_total = max(trials_total, TuningLog(self.work_dir).n_records)
        machine = self.machine
        if "boards" in machine:  # a farm: which boards measured, how many candidates were re-measured
            from c2f_edge.tune.farm import boards_used

            used = boards_used(self.work_dir / FARM_JOURNAL)
            machine = {**machine, "boards_measuring_at_once": machine["boards"], "boards": len(used),
                       "boards_used": used, "remeasured_after_board_drop": getattr(self.runner, "retried", 0)}
        write_meta(self.work_dir, target_name=cfg.target, target=self.target_json,
                   graph_signature=self.ident["graph_signature"], variant=self.ident["variant"],
                   input_shape=self.ident["input_shape"], trials=trials_total, date=_now(), machine=machine,
                   tuning_time_s=round(self.prev_time_s + elapsed, 1),
                   tasks={"extracted": len(self.tasks), "tuned": len(self.order)},
                   trials_per_round=cfg.trials_per_round, search_population=search_population(cfg.trials_per_round),
                   precision=cfg.precision,
                   threads=1 if self.emulated else None if self.remote else
                   int(os.environ.get("TVM_NUM_THREADS") or 0) or None,
                   linker=self.fcompile.describe() if hasattr(self.fcompile, "describe") else None)


def default_work_dir(target_name: str, machine: str | None = None, precision: str = "fp32") -> Path:
    return tuning_db.log_dir(target_name, machine, precision=precision)


def tune(cfg: TuneConfig) -> TuningLog:
    """Tune (or resume tuning) the model's kernels for cfg.target; returns the log in the work dir."""
    from c2f_edge.core.progress import Stages

    _check_options(cfg)
    stages = Stages(4)
    t0 = time.perf_counter()
    with stages.step(f"resolving target {cfg.target!r} and model"):
        job = _resolve(cfg)
    with stages.step("importing the model and extracting tasks"):
        left, done = _plan(job)
    with stages.step(f"tuning {left} trials on {_where(job)}"):
        if left:
            _search(job, left, done)
        else:
            print("  nothing to do: the work dir already has --trials records", file=sys.stderr)
            if not (job.work_dir / tuning_db.META).is_file():
                job.save_meta(done, 0.0)
    with stages.step("checking the log"):
        log = read_log(job.work_dir)
        why = mismatch(log, job.target_json, job.ident["graph_signature"], job.cfg.precision)
        if why:  # cannot happen unless the work dir was edited meanwhile
            raise UsageError(f"the log in {job.work_dir} does not fit: {why}", hint="use a fresh --work-dir")
    print(f"tuning log: {job.work_dir} ({log.n_records} records, {log.meta.get('trials')} trials, "
          f"{time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    return log


def _where(job: _Job) -> str:
    if job.emulated:
        return f"an emulated {job.machine['cpu']} (estimated cycles, not timings)"
    if not job.remote:
        return "this CPU"
    n = job.machine.get("boards")
    return f"{n} board(s) under key {job.cfg.rpc_key!r}" if n else "the board"


def _check_options(cfg: TuneConfig) -> None:
    if cfg.trials < 0:
        raise UsageError("--trials must be >= 0", hint="e.g. --trials 1000")
    if cfg.rpc and cfg.rpc_tracker:
        raise UsageError("--rpc and --rpc-tracker are alternatives", hint="pass one of them")
    if cfg.rpc_tracker and not cfg.rpc_key:
        raise UsageError("--rpc-tracker needs --rpc-key", hint="the key the board registered with, e.g. rpi4")
    if cfg.boards is not None and (cfg.boards < 1 or not cfg.rpc_tracker):
        raise UsageError("--boards N needs --rpc-tracker and N >= 1",
                         hint="it caps how many of the key's boards measure at once")
    if cfg.rpc_key and not cfg.rpc_tracker:
        raise UsageError("--rpc-key needs --rpc-tracker HOST:PORT", hint="or use --rpc HOST:PORT for one server")
    if cfg.emulated and (cfg.rpc or cfg.rpc_tracker):
        raise UsageError("--emulated scores candidates here, on an emulated core; --rpc/--rpc-tracker measure "
                         "them on a board", hint="pass one of them")
    if cfg.cpu and not cfg.emulated:
        raise UsageError("--cpu picks the emulated core", hint="add --emulated, or drop --cpu")


def _resolve(cfg: TuneConfig) -> _Job:
    remote = bool(cfg.rpc or cfg.rpc_tracker)
    spec, target_json, fcompile = resolve_target(cfg.target, cfg.cross_compiler)
    precision.check(spec, precision.get(cfg.precision))
    if cfg.emulated:
        machine = emulated_machine(cfg.target, target_json, cfg.cpu)
    elif not remote and not spec.runs_here:
        raise UsageError(f"target {cfg.target!r} is not this machine: its kernels cannot be measured here",
                         hint="tune it on the board: --rpc-tracker HOST:PORT --rpc-key KEY (or --rpc HOST:PORT)")
    onnx_path = _onnx_path(cfg)
    ident = model_identity(onnx_path)
    work_dir = Path(cfg.work_dir) if cfg.work_dir else default_work_dir(cfg.target, spec.machine(), cfg.precision)
    carry_from = _check_work_dir(work_dir, target_json, ident["graph_signature"], cfg.precision)
    if not cfg.emulated:
        half_on_opencl = cfg.precision != "fp32" and spec.kind == "opencl"
        machine = remote_machine(cfg, half_on_opencl) if remote else host_machine()
    boards = machine.get("boards", 1)
    if cfg.trials_per_round % boards:
        # A round ends when its last candidate is measured: with a multiple of the boards, none waits idle.
        per_round = -(-cfg.trials_per_round // boards) * boards
        print(f"  {per_round} candidates per round instead of {cfg.trials_per_round}: a multiple of the {boards} "
              "boards", file=sys.stderr)
        cfg = replace(cfg, trials_per_round=per_round)
    from c2f_edge.compile.stage import split_reduction_for

    split = split_reduction_for(None, spec, target_json, cfg.precision)
    return _Job(cfg, target_json, fcompile, onnx_path, ident, work_dir, machine, carry_from=carry_from,
                split_reduction=split)


def _plan(job: _Job) -> tuple[int, int]:
    """Extract the tasks, count what the work dir already holds; returns (trials left, trials done)."""
    cfg, work_dir = job.cfg, job.work_dir
    job.tasks = extract_tasks(job.onnx_path, job.target_json, precision.get(cfg.precision))
    if job.split_reduction:
        job.tasks, left_out = without_split(job.tasks, job.target_json)
        if left_out:
            print(f"  {left_out} kernels left untuned: {cfg.target}'s builds take the split reduction for them "
                  "(compile --no-split-reduction builds them with their default schedules)", file=sys.stderr)
    if work_dir.is_dir() and repair_tail(work_dir):
        print(f"  dropped a half-written line in {work_dir} (a run killed mid-write)", file=sys.stderr)
    if job.carry_from is not None:
        c = carry.carry_over(work_dir, job.tasks)
        print(f"  carried {work_dir} over from pipeline version {job.carry_from} to {c['to_pipeline_version']}: "
              f"kept {c['records_kept']} records of the {c['kernels_kept']} kernels that did not change, dropped "
              f"{c['records_dropped']} of kernels the graph no longer has; {c['kernels_new']} kernels are new",
              file=sys.stderr)
    counts = task_record_counts(job.tasks, work_dir)
    job.order, left, done = plan_resume(job.tasks, counts, cfg.trials, cfg.trials_per_round, cfg.max_tasks)
    print(f"  {len(job.tasks)} tasks; tuning {len(job.order)}; {done} trials already in {work_dir}, "
          f"{left} to go (--trials {cfg.trials})", file=sys.stderr)
    work_dir.mkdir(parents=True, exist_ok=True)
    if (work_dir / RECORD_FILE).is_file() and (work_dir / tuning_db.META).is_file():
        job.prev_time_s = float(read_log(work_dir).meta.get("tuning_time_s") or 0.0)
    return left, done


def _search(job: _Job, left: int, done: int) -> None:
    """Measure the default schedules, then search, saving meta.json after every round."""
    from tvm.s_tir import meta_schedule as ms

    from c2f_edge.backend.builder import PoolBuilder

    cfg, work_dir = job.cfg, job.work_dir
    tasks = [job.tasks[i] for i in job.order]
    t_tune = time.perf_counter()
    import_intrinsics_without_cuda(job.target_json)
    builder = PoolBuilder(max_workers=cfg.builder_workers, timeout_sec=cfg.build_timeout_s, fcompile=job.fcompile)
    progress = None
    with contextlib.ExitStack() as stack:
        loggers = stack.enter_context(task_logs(work_dir, [t.task_name for t in tasks], cfg.verbose))
        stack.enter_context(_measure_threads(job))
        contexts, weights = tune_contexts(tasks, loggers, cfg.seed, cfg.trials_per_round)
        if job.emulated:
            import tempfile

            from c2f_edge.tune.emulated import EmulatedRunner

            scratch = stack.enter_context(tempfile.TemporaryDirectory(prefix="c2f-emulated-"))
            runner = job.runner = EmulatedRunner(job.machine["cpu"], scratch, cfg.run_timeout_s * 10)
        else:
            runner = job.runner = make_runner(cfg, cfg.run_timeout_s, job.machine.get("boards", 1),
                                              str(work_dir / FARM_JOURNAL))
        best: dict[int, float] = {}
        stale: dict[int, int] = {}
        db = ms.database.JSONDatabase(path_workload=str(work_dir / WORKLOAD_FILE),
                                      path_tuning_record=str(work_dir / RECORD_FILE), allow_missing=True)
        try:
            with _sigterm_as_interrupt():
                if not is_gpu(job.target_json):
                    # The defaults are measured candidates too: they count against --trials.
                    seeded = seed_default_schedules(tasks, job.target_json, builder, runner, db)
                    if seeded:
                        print(f"  measured the default schedule of {seeded} tasks as records", file=sys.stderr)
                    done, left = done + seeded, max(0, left - seeded)
                    job.save_meta(done, time.perf_counter() - t_tune)
                progress = make_progress(len(tasks), left,
                                         lambda n: job.save_meta(done + n, time.perf_counter() - t_tune), best, stale,
                                         unit="est. ms" if job.emulated else "ms")
                if left > 0:
                    ms.tune.tune_tasks(
                        tasks=contexts, task_weights=weights, work_dir=str(work_dir), max_trials_global=left,
                        num_trials_per_iter=cfg.trials_per_round, builder=builder, runner=runner, database=db,
                        measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), progress],
                        task_scheduler=make_scheduler(best, stale))
        except Exception as e:
            from c2f_edge.tune.farm import BOARDS_GONE

            if BOARDS_GONE in str(e):
                _say_interrupted(progress.trials if progress else 0, work_dir)
                raise RemoteError(f"every board under key {cfg.rpc_key!r} at {cfg.rpc_tracker} dropped; tuning "
                                  "stopped", hint="start the boards again and run the same command to resume") from e
            # Ctrl-C inside a Python callback reaches us wrapped in an FFI error.
            if isinstance(e, KeyboardInterrupt) or "KeyboardInterrupt" in f"{type(e).__name__} {e}" or _SIGNALLED:
                _say_interrupted(progress.trials if progress else 0, work_dir)
                raise KeyboardInterrupt from e
            if job.remote:
                raise RemoteError(f"tuning over RPC failed: {first_line(e, 300)}",
                                  hint="the board may have dropped; run the same command again to resume") from e
            raise
        except KeyboardInterrupt:
            _say_interrupted(progress.trials if progress else 0, work_dir)
            raise
        finally:
            if progress is not None:
                progress.close()
            builder.shutdown()
            job.save_meta(done + (progress.trials if progress else 0), time.perf_counter() - t_tune)
    print(f"  built {builder.n_built} candidates, {builder.n_failed} build failures", file=sys.stderr)


@contextlib.contextmanager
def _measure_threads(job: _Job):
    """Local runs measure with the target's core count: the runner's workers inherit TVM_NUM_THREADS.
    Unset, TVM uses half the hardware threads on x86 (one on a 2-vCPU VM), and kernels would be chosen
    for a thread count nobody deploys."""
    threads = measure_threads(job.target_json)
    if job.remote or job.emulated or not threads or os.environ.get("TVM_NUM_THREADS"):
        yield
        return
    os.environ["TVM_NUM_THREADS"] = str(threads)
    try:
        yield
    finally:
        os.environ.pop("TVM_NUM_THREADS", None)


def _say_interrupted(trials: int, work_dir: Path) -> None:
    # `trials` counts the search's; the default schedules measured first are records too.
    print(f"\ninterrupted: every record measured so far is saved in {work_dir} "
          f"({max(trials, TuningLog(work_dir).n_records)} in all); run the same command again to resume",
          file=sys.stderr)


_SIGNALLED: list[int] = []  # signals that stopped the current search (SIGINT, SIGTERM)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """`kill PID` stops a tuning run like Ctrl-C does (meta.json written, workers stopped). Both are noted:
    a KeyboardInterrupt raised inside MetaSchedule's C++ loop can come back as another error (Ctrl-C during
    the cost model's first import came back as a bare RuntimeError), and is still an interrupt."""
    import signal
    import threading

    _SIGNALLED.clear()
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, _frame):
        _SIGNALLED.append(signum)
        raise KeyboardInterrupt

    old = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)


def _check_work_dir(work_dir: Path, target_json: dict, graph_sig: str, precision_name: str = "fp32") -> int | None:
    """Refuse to mix records for another TVM version, target or model into an existing log. Returns the
    log's pipeline version where that is all that differs (the log is carried over: tune.carry)."""
    if not work_dir.exists():
        return None
    if not work_dir.is_dir():
        raise UsageError(f"--work-dir {work_dir} is a file", hint="pass a directory")
    if carry.finish(work_dir):
        print(f"  finished carrying {work_dir} over (a run was stopped while moving its files)", file=sys.stderr)
    has_db = (work_dir / RECORD_FILE).is_file() or (work_dir / WORKLOAD_FILE).is_file()
    if not has_db:
        return None
    log = read_log(work_dir)
    if not log.meta:
        return None  # interrupted before the first meta.json write: the records are ours to resume
    old = carry.stale_by_version_only(log, target_json, graph_sig, precision_name)
    if old is not None:
        return old
    why = mismatch(log, target_json, graph_sig, precision_name)
    if why:
        raise UsageError(f"{work_dir} holds a tuning log for something else: {why}",
                         hint="pass another --work-dir, or delete that directory to start over")
    return None


def _onnx_path(cfg: TuneConfig) -> Path:
    if cfg.onnx:
        p = Path(cfg.onnx)
        if not p.is_file():
            raise ArtifactError(f"ONNX file not found: {p}", hint="run `c2f-edge export` first, or fix --onnx")
        return p
    from c2f_edge.export import ExportConfig, export_onnx

    m = cfg.model or {}
    out = Path(".cache") / "tune-onnx" / f"{m.get('variant', 'n')}-{m.get('weights') or 'ckpt'}-{m.get('seed', 0)}"
    if (out / "model.onnx").is_file() and (out / "manifest.json").is_file():
        return out / "model.onnx"
    return export_onnx(ExportConfig(variant=m.get("variant", "n"), checkpoint=m.get("checkpoint"),
                                    weights=m.get("weights"), seed=m.get("seed", 0), out=str(out)))


def _now() -> str:
    from c2f_edge.core.artifacts import now_iso

    return now_iso()
