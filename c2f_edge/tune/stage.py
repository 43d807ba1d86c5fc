"""Stage: MetaSchedule auto-tuning of the compiled model's kernels, locally or on a board over RPC.

    log = tune(TuneConfig(target="host", trials=1000, onnx="build/onnx/model.onnx"))

The work dir (default `tuning_logs/<target>/`) is a MetaSchedule JSON database plus `meta.json`
(see c2f_edge.tuning_db). JSONDatabase appends each record as it is measured, so a run that is
interrupted (Ctrl-C, a board that drops) loses nothing: running the same command again reuses the
records, counts them against --trials, and spends the rest on the least-tuned tasks first.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from c2f_edge.backend import tuning_db, tvm_build
from c2f_edge.core.errors import RemoteError, UsageError
from c2f_edge.backend.tuning_db import (
    RECORD_FILE,
    WORKLOAD_FILE,
    TuningLog,
    mismatch,
    read_log,
    write_meta,
)

MS_LOGGER = "tvm.s_tir.meta_schedule"
# Candidates measured per task per round. 16 keeps rounds short on a 2-core machine.
TRIALS_PER_ROUND = 16


@dataclass
class TuneConfig:
    target: str = "host"
    trials: int = 1000
    onnx: str | None = None
    work_dir: str | None = None
    rpc_tracker: str | None = None   # HOST:PORT of a tracker (with rpc_key)
    rpc_key: str | None = None
    rpc: str | None = None           # HOST:PORT of one RPC server, no tracker
    trials_per_round: int = TRIALS_PER_ROUND
    max_tasks: int | None = None     # tune only the N heaviest tasks (tests, quick looks)
    builder_workers: int | None = None
    build_timeout_s: float = 60.0
    run_timeout_s: float = 60.0
    session_timeout_s: int = 120
    seed: int | None = 0
    cross_compiler: str | None = None  # override the target's linker for candidates (as in compile)
    verbose: bool = False              # MetaSchedule's own log on the console (always in WORK_DIR/logs)
    # Where the model comes from when no --onnx is given (exported into the work dir's cache).
    model: dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------- targets

def resolve_target(name: str, cross_compiler: str | None = None):
    """Target name -> (target JSON exactly as compile builds it, fcompile for candidates or None).

    Uses compile's registry (c2f_edge.targets). Cross targets get the cross-linker from
    c2f_edge.backend.crosslink, so candidates load on a board that has no compiler.
    """
    from c2f_edge.backend import crosslink, targets

    spec = targets.get(name)
    spec.check()
    fcompile = None if spec.runs_here and not cross_compiler else crosslink.linker_for(spec, cross_compiler)
    return spec, spec.to_json(), fcompile


def host_machine() -> dict:
    """Where a local tuning run measured: CPU model, cores, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import tvm

    return {"kind": "local", "cpu": cpu, "cores": os.cpu_count(), "arch": platform.machine(),
            "llvm_mcpu": tvm.target.codegen.llvm_get_system_cpu(), "os": f"{platform.system()} {platform.release()}",
            "node": platform.node()}


# ---------------------------------------------------------------------------------------------- RPC

def parse_hostport(s: str, flag: str) -> tuple[str, int]:
    host, _, port = (s or "").rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"{flag} must be HOST:PORT, got {s!r}", hint=f"e.g. {flag} 127.0.0.1:9190")
    return host, int(port)


class DirectSession:
    """Picklable f_create_session for RPCRunner: connect to one server without a tracker."""

    def __init__(self, host: str, port: int, timeout: int):
        self.host, self.port, self.timeout = host, port, timeout

    def __call__(self, _rpc_config):
        from tvm import rpc

        return rpc.connect(self.host, self.port, session_timeout=self.timeout)


def remote_machine(cfg: TuneConfig) -> dict:
    """Where an RPC tuning run measures; opening a session first also fails fast (RemoteError) when the
    tracker, key or server is not there, instead of every candidate timing out."""
    from c2f_edge.board import rpc

    if cfg.rpc:
        sess = rpc.connect(cfg.rpc, session_timeout=cfg.session_timeout_s)
        info = {"kind": "rpc", "server": cfg.rpc}
    else:
        sess = rpc.connect(tracker=cfg.rpc_tracker, key=cfg.rpc_key, session_timeout=cfg.session_timeout_s)
        info = {"kind": "rpc", "tracker": cfg.rpc_tracker, "key": cfg.rpc_key}
    dev = sess.cpu(0)
    info["remote_cpu_present"] = bool(dev.exist)
    del sess
    return info


def make_runner(cfg: TuneConfig, timeout_s: float):
    from tvm.s_tir import meta_schedule as ms

    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=100, enable_cpu_cache_flush=False)
    if cfg.rpc:
        host, port = parse_hostport(cfg.rpc, "--rpc")
        rc = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key="direct",
                                 session_timeout_sec=cfg.session_timeout_s)
        return ms.runner.RPCRunner(rc, evaluator, f_create_session=DirectSession(host, port, cfg.session_timeout_s))
    if cfg.rpc_tracker:
        host, port = parse_hostport(cfg.rpc_tracker, "--rpc-tracker")
        rc = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=cfg.rpc_key,
                                 session_timeout_sec=cfg.session_timeout_s)
        return ms.runner.RPCRunner(rc, evaluator)
    return ms.runner.LocalRunner(timeout_sec=timeout_s, evaluator_config=evaluator)


def measure_threads(target_json: dict) -> int | None:
    """Threads the kernels are measured with: the target's core count (what a deployment uses)."""
    cores = target_json.get("num-cores") or (target_json.get("host") or {}).get("num-cores")
    return int(cores) if cores else None


# ---------------------------------------------------------------------------------------------- model

def _model_identity(onnx_path: Path) -> dict:
    """graph_signature, variant and input shape: from the export manifest, else from the graph."""
    from c2f_edge.export.stage import graph_signature, load_onnx

    man_path = onnx_path.parent / "manifest.json"
    if man_path.is_file():
        man = json.loads(man_path.read_text())
        if man.get("graph_signature"):
            return {"graph_signature": man["graph_signature"], "variant": man.get("variant"),
                    "input_shape": man.get("input", {}).get("shape")}
    model = load_onnx(onnx_path)
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {"graph_signature": graph_signature(model), "variant": None, "input_shape": shape}


def extract_tasks(onnx_path, target_json: dict):
    """ONNX -> MetaSchedule tasks, from exactly the module compile builds (weights bound, legalized, fused)."""
    from tvm.s_tir import meta_schedule as ms

    from c2f_edge.backend import tvm_build

    target = tvm_build.as_target(target_json)
    mod, params = tvm_build.import_onnx(onnx_path)
    fused = tvm_build.legalize_and_fuse(tvm_build.bind_params(mod, params), target)
    return ms.relax_integration.extract_tasks(fused, target)


def seed_default_schedules(tasks, target_json, builder, runner, db) -> int:
    """Measure c2f-edge's default CPU schedule of each task and commit it as a tuning record.

    A record always wins over the default at compile time, so without this a short search could
    make a kernel slower than not tuning it; with it the database's best is never the worse one.
    Returns how many tasks got a record.
    """
    from tvm.s_tir import meta_schedule as ms

    from c2f_edge.backend.schedules import schedule_func

    target = tvm_build.as_target(target_json)
    # (workload, trace) already recorded: a resumed log is re-seeded only where the rules changed
    have = [(r.workload, str(r.trace)) for r in db.get_all_tuning_records()]
    cands = []
    for t in tasks:
        mod = t.dispatched[0]
        sch = schedule_func(mod["main"], target)
        if sch is None:
            continue
        if db.has_workload(mod):
            wl, trace = db.commit_workload(mod), str(sch.trace)
            if any(w.same_as(wl) and t == trace for w, t in have):
                continue
        cands.append((mod, sch))
    if not cands:
        return 0
    built = builder.build([ms.builder.BuilderInput(sch.mod, target) for _, sch in cands])
    runs, keep = [], []
    for (mod, sch), b in zip(cands, built):
        if b.error_msg:
            continue
        args = ms.arg_info.ArgInfo.from_prim_func(mod["main"])
        runs.append(ms.runner.RunnerInput(b.artifact_path, device_type="cpu", args_info=args))
        keep.append((mod, sch, args))
    n = 0
    for (mod, sch, args), fut in zip(keep, runner.run(runs)):
        res = fut.result()
        if res.error_msg or not res.run_secs:
            continue
        db.commit_tuning_record(ms.database.TuningRecord(
            sch.trace, db.commit_workload(mod), run_secs=res.run_secs, target=target, args_info=args))
        n += 1
    return n


# ---------------------------------------------------------------------------------------------- resume

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


def _task_record_counts(tasks, work_dir: Path) -> list[int]:
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
        idx = sorted(idx, key=lambda i: -tasks[i].weight * _flops(tasks[i]))[:max_tasks]
    done = sum(counts[i] for i in idx)
    # Fewest records first; among equals the costliest kernels first, so a short run (or the rest of
    # an interrupted one) goes where the time is.
    cost = {i: tasks[i].weight * _flops(tasks[i]) for i in idx}
    idx.sort(key=lambda i: (counts[i], -cost[i]))
    return idx, max(0, trials - done), done


def _flops(task) -> float:
    try:
        from tvm.s_tir.analysis import estimate_tir_flops

        return float(estimate_tir_flops(task.dispatched[0]))
    except Exception:  # noqa: BLE001 - an op the estimator does not know: treat it as cheap
        return 1.0


# ---------------------------------------------------------------------------------------------- scheduler

def _make_scheduler(best: dict[int, float], improved: dict[int, int]):
    """A task scheduler that saves results as soon as they are measured.

    MetaSchedule's gradient scheduler joins (and so writes to the database) nothing until it has sent
    every task to the runner once: for 52 tasks that is ~800 trials that a Ctrl-C would lose. This
    one joins every finished task before each pick. Policy: one round per task in list order (so a
    resume fills the least-tuned tasks first), then the task that costs the most end to end
    (weight x best latency), discounted by how many of its rounds in a row brought no improvement.
    `best`/`improved` are filled in by the progress callback (task id -> best ms / stale rounds).
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.task_scheduler import PyTaskScheduler

    @derived_object
    class FlushingScheduler(PyTaskScheduler):
        def __init__(self):
            super().__init__()
            self.first_pass = 0

        def next_task_id(self) -> int:
            outer = self._outer()  # pylint: disable=no-member
            tasks = outer.tasks_
            for i in range(len(tasks)):
                outer.touch_task(i)  # joins a task whose measurements are all done
            live = [i for i, t in enumerate(tasks) if not t.is_terminated]
            if not live:
                return -1
            while self.first_pass < len(tasks):
                i = self.first_pass
                self.first_pass += 1
                if not tasks[i].is_terminated:
                    return i
            for i in live:  # a task cannot be searched again while its last round is still running
                if tasks[i].runner_futures is not None:
                    outer.join_running_task(i)

            def score(i):
                b = best.get(i, math.inf)
                if math.isinf(b):
                    return 0.0
                return float(tasks[i].task_weight) * b * 0.5 ** improved.get(i, 0)

            return max(live, key=score)

    return FlushingScheduler()


# ---------------------------------------------------------------------------------------------- progress

def _make_progress(n_tasks: int, budget: int, on_round, best: dict[int, float], stale: dict[int, int]):
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    from c2f_edge.core.progress import bar

    @derived_object
    class Progress(PyMeasureCallback):
        """One tqdm bar: trials measured, tasks touched, failures, best latency of the current task."""

        def __init__(self):
            super().__init__()
            self.trials = 0
            self.failed = 0
            self.best = best
            self.bar = bar(total=budget, unit="trial", desc="tuning")

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            n = len(measure_candidates)
            before = self.best.get(task_id, math.inf)
            for b, r in zip(builder_results, runner_results):
                if b.error_msg or r.error_msg or not r.run_secs:
                    self.failed += 1
                    continue
                ms_ = 1e3 * sum(float(s) for s in r.run_secs) / len(r.run_secs)
                self.best[task_id] = min(self.best.get(task_id, math.inf), ms_)
            # "improved" = at least 1% faster than before this round
            stale[task_id] = 0 if self.best.get(task_id, math.inf) < 0.99 * before else stale.get(task_id, 0) + 1
            self.trials += n
            self.bar.update(n)
            total_best = sum(self.best.values())
            self.bar.set_postfix_str(f"tasks {len(self.best)}/{n_tasks}, task {task_id} best "
                                     f"{self.best.get(task_id, math.nan):.3f} ms, sum of bests "
                                     f"{total_best:.1f} ms, failed {self.failed}")
            on_round(self.trials)

        def close(self):
            self.bar.close()

    return Progress()


# ---------------------------------------------------------------------------------------------- tune

def default_work_dir(target_name: str, machine: str | None = None) -> Path:
    return tuning_db.log_dir(target_name, machine)


def tune(cfg: TuneConfig) -> TuningLog:
    """Tune (or resume tuning) the model's kernels for cfg.target; returns the log in the work dir."""
    from tvm.s_tir import meta_schedule as ms

    from c2f_edge.backend.builder import PoolBuilder
    from c2f_edge.core.progress import Stages

    if cfg.trials < 0:
        raise UsageError("--trials must be >= 0", hint="e.g. --trials 1000")
    if cfg.rpc and cfg.rpc_tracker:
        raise UsageError("--rpc and --rpc-tracker are alternatives", hint="pass one of them")
    if cfg.rpc_tracker and not cfg.rpc_key:
        raise UsageError("--rpc-tracker needs --rpc-key", hint="the key the board registered with, e.g. rpi4")
    if cfg.rpc_key and not cfg.rpc_tracker:
        raise UsageError("--rpc-key needs --rpc-tracker HOST:PORT", hint="or use --rpc HOST:PORT for one server")
    remote = bool(cfg.rpc or cfg.rpc_tracker)

    stages = Stages(4)
    t0 = time.perf_counter()
    with stages.step(f"resolving target {cfg.target!r} and model"):
        spec, target_json, fcompile = resolve_target(cfg.target, cfg.cross_compiler)
        if not remote and not spec.runs_here:
            raise UsageError(f"target {cfg.target!r} is not this machine: its kernels cannot be measured here",
                             hint="tune it on the board: --rpc-tracker HOST:PORT --rpc-key KEY (or --rpc HOST:PORT)")
        onnx_path = _onnx_path(cfg)
        ident = _model_identity(onnx_path)
        work_dir = Path(cfg.work_dir) if cfg.work_dir else default_work_dir(cfg.target, spec.machine())
        _check_work_dir(work_dir, target_json, ident["graph_signature"])
        machine = remote_machine(cfg) if remote else host_machine()

    with stages.step("importing the model and extracting tasks"):
        tasks = extract_tasks(onnx_path, target_json)
        if work_dir.is_dir() and repair_tail(work_dir):
            print(f"  dropped a half-written line in {work_dir} (a run killed mid-write)", file=sys.stderr)
        counts = _task_record_counts(tasks, work_dir)
        order, left, done = plan_resume(tasks, counts, cfg.trials, cfg.trials_per_round, cfg.max_tasks)
        print(f"  {len(tasks)} tasks; tuning {len(order)}; {done} trials already in {work_dir}, "
              f"{left} to go (--trials {cfg.trials})", file=sys.stderr)

    work_dir.mkdir(parents=True, exist_ok=True)
    prev = read_log(work_dir).meta if (work_dir / RECORD_FILE).is_file() and (work_dir / "meta.json").is_file() else {}
    prev_time = float(prev.get("tuning_time_s") or 0.0)

    def save_meta(trials_total: int, elapsed: float) -> None:
        # Every measured candidate leaves a record (failures too), so the file is the ground truth
        # even when an interrupt lands between the database write and our progress callback.
        trials_total = max(trials_total, tuning_db.TuningLog(work_dir).n_records)
        write_meta(work_dir, target_name=cfg.target, target=target_json, graph_signature=ident["graph_signature"],
                   variant=ident["variant"], input_shape=ident["input_shape"], trials=trials_total,
                   date=_now(), machine=machine, tuning_time_s=round(prev_time + elapsed, 1),
                   tasks={"extracted": len(tasks), "tuned": len(order)}, trials_per_round=cfg.trials_per_round,
                   threads=None if remote else int(os.environ.get("TVM_NUM_THREADS") or 0) or None,
                   linker=fcompile.describe() if hasattr(fcompile, "describe") else None)

    with stages.step(f"tuning {left} trials on {'the board' if remote else 'this CPU'}"), \
            contextlib.ExitStack() as stack:
        t_tune = time.perf_counter()
        if left == 0:
            print("  nothing to do: the work dir already has --trials records", file=sys.stderr)
        else:
            _import_cpu_intrinsics(target_json)
            loggers = stack.enter_context(task_logs(work_dir, [tasks[i].task_name for i in order], cfg.verbose))
            contexts, weights = _tune_contexts([tasks[i] for i in order], loggers, cfg.seed)
            builder = PoolBuilder(max_workers=cfg.builder_workers, timeout_sec=cfg.build_timeout_s,
                                  fcompile=fcompile)
            threads = measure_threads(target_json)
            saved_threads = os.environ.get("TVM_NUM_THREADS")
            if not remote and threads and not saved_threads:
                # The runner's workers inherit this. Unset, TVM uses half the hardware threads on x86
                # (one on a 2-vCPU VM), and kernels would be chosen for a thread count nobody deploys.
                os.environ["TVM_NUM_THREADS"] = str(threads)
            runner = make_runner(cfg, cfg.run_timeout_s)
            best: dict[int, float] = {}
            stale: dict[int, int] = {}
            db = ms.database.JSONDatabase(path_workload=str(work_dir / WORKLOAD_FILE),
                                          path_tuning_record=str(work_dir / RECORD_FILE), allow_missing=True)
            progress = None
            try:
                with _sigterm_as_interrupt():
                    if not tvm_build.is_gpu(target_json):
                        # The defaults are measured candidates too: they count against --trials.
                        seeded = seed_default_schedules([tasks[i] for i in order], target_json, builder, runner, db)
                        if seeded:
                            print(f"  measured the default schedule of {seeded} tasks as records", file=sys.stderr)
                        done, left = done + seeded, max(0, left - seeded)
                        save_meta(done, time.perf_counter() - t_tune)
                    progress = _make_progress(len(order), left,
                                              lambda n: save_meta(done + n, time.perf_counter() - t_tune), best, stale)
                    if left > 0:
                        ms.tune.tune_tasks(
                            tasks=contexts, task_weights=weights, work_dir=str(work_dir), max_trials_global=left,
                            num_trials_per_iter=cfg.trials_per_round, builder=builder, runner=runner, database=db,
                            measure_callbacks=[*ms.measure_callback.MeasureCallback.create("default"), progress],
                            task_scheduler=_make_scheduler(best, stale))
            except Exception as e:
                # Ctrl-C inside a Python callback reaches us wrapped in an FFI error.
                if isinstance(e, KeyboardInterrupt) or "KeyboardInterrupt" in f"{type(e).__name__} {e}":
                    _say_interrupted(progress.trials if progress else 0, work_dir)
                    raise KeyboardInterrupt from e
                if remote:
                    raise RemoteError(f"tuning over RPC failed: {_first_line(e)}",
                                      hint="the board may have dropped; run the same command again to resume") from e
                raise
            except KeyboardInterrupt:
                _say_interrupted(progress.trials if progress else 0, work_dir)
                raise
            finally:
                if progress is not None:
                    progress.close()
                builder.shutdown()
                save_meta(done + (progress.trials if progress else 0), time.perf_counter() - t_tune)
                if saved_threads is None:
                    os.environ.pop("TVM_NUM_THREADS", None)
            print(f"  built {builder.n_built} candidates, {builder.n_failed} build failures", file=sys.stderr)
        if left == 0 and not (work_dir / "meta.json").is_file():
            save_meta(done, 0.0)

    with stages.step("checking the log"):
        log = read_log(work_dir)
        why = mismatch(log, target_json, ident["graph_signature"])
        if why:  # cannot happen unless the work dir was edited meanwhile
            raise UsageError(f"the log in {work_dir} does not fit: {why}", hint="use a fresh --work-dir")
    print(f"tuning log: {work_dir} ({log.n_records} records, {log.meta.get('trials')} trials, "
          f"{time.perf_counter() - t0:.0f}s)", file=sys.stderr)
    return log


def _say_interrupted(trials: int, work_dir: Path) -> None:
    print(f"\ninterrupted: the {trials} trials measured by this run are saved in {work_dir}; "
          "run the same command again to resume", file=sys.stderr)


@contextlib.contextmanager
def _sigterm_as_interrupt():
    """`kill PID` stops a tuning run like Ctrl-C does (meta.json written, workers stopped)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(_signum, _frame):
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _import_cpu_intrinsics(target_json: dict) -> None:
    """Import MetaSchedule's tensor intrinsics without the CUDA ones, for a CPU target.

    TuneContext imports `tvm.s_tir.tensor_intrin`, whose CUDA part alone parses hundreds of TVMScript
    functions (about 24 s here, minutes on busy cores) that a CPU schedule never uses. A placeholder
    stands in for `tensor_intrin.cuda` during that import and is removed right after, so a later
    GPU build in the same process still imports the real module.
    """
    import types

    if target_json.get("kind") != "llvm" or "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    name = "tvm.s_tir.tensor_intrin.cuda"
    sys.modules[name] = types.ModuleType(name)
    try:
        import tvm.s_tir.tensor_intrin as ti
    finally:
        del sys.modules[name]
    if isinstance(getattr(ti, "cuda", None), types.ModuleType) and not hasattr(ti.cuda, "__file__"):
        delattr(ti, "cuda")


def _tune_contexts(tasks, loggers, seed: int | None):
    """One TuneContext per extracted task, as MetaSchedule's `extracted_tasks_to_tune_contexts` makes
    them, but with our loggers (see task_logs)."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.utils import fork_seed

    contexts = [ms.TuneContext(mod=t.dispatched[0], target=t.target, space_generator="post-order-apply",
                               search_strategy="evolutionary", task_name=t.task_name, logger=lg,
                               rand_state=rs, num_threads="physical").clone()
                for t, lg, rs in zip(tasks, loggers, fork_seed(seed, n=len(tasks)))]
    return contexts, [t.weight for t in tasks]


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


def _check_work_dir(work_dir: Path, target_json: dict, graph_sig: str) -> None:
    """Refuse to mix records for another TVM version, target or model into an existing log."""
    if not work_dir.exists():
        return
    if not work_dir.is_dir():
        raise UsageError(f"--work-dir {work_dir} is a file", hint="pass a directory")
    has_db = (work_dir / RECORD_FILE).is_file() or (work_dir / WORKLOAD_FILE).is_file()
    if not has_db:
        return
    log = read_log(work_dir)
    if not log.meta:
        return  # interrupted before the first meta.json write: the records are ours to resume
    why = mismatch(log, target_json, graph_sig)
    if why:
        raise UsageError(f"{work_dir} holds a tuning log for something else: {why}",
                         hint="pass another --work-dir, or delete that directory to start over")


def _onnx_path(cfg: TuneConfig) -> Path:
    if cfg.onnx:
        p = Path(cfg.onnx)
        if not p.is_file():
            from c2f_edge.core.errors import ArtifactError

            raise ArtifactError(f"ONNX file not found: {p}", hint="run `c2f-edge export` first, or fix --onnx")
        return p
    from c2f_edge.export.stage import ExportConfig, export_onnx

    m = cfg.model or {}
    out = Path(".cache") / "tune-onnx" / f"{m.get('variant', 'n')}-{m.get('weights') or 'ckpt'}-{m.get('seed', 0)}"
    if (out / "model.onnx").is_file() and (out / "manifest.json").is_file():
        return out / "model.onnx"
    return export_onnx(ExportConfig(variant=m.get("variant", "n"), checkpoint=m.get("checkpoint"),
                                    weights=m.get("weights"), seed=m.get("seed", 0), out=str(out)))


def _now() -> str:
    from c2f_edge.core.artifacts import now_iso

    return now_iso()


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else type(e).__name__)[:300]
