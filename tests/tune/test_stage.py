"""`c2f-edge tune`: real (small) tuning runs, resume after an interrupt, RPC measurement, replay in compile."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from c2f_edge.backend import tuning_db
from c2f_edge.core.errors import UsageError
from tests.fixtures.tuning import interrupt_tune, measured, tuning_records

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def _measured_ok(work: Path) -> int:
    return measured(tuning_records(work))


def _sha(work: Path) -> dict:
    from c2f_edge.core.artifacts import sha256_file

    return {n: sha256_file(work / n) for n in (tuning_db.WORKLOAD_FILE, tuning_db.RECORD_FILE)}


# --- pure logic --------------------------------------------------------------------------------------

class _Task:
    def __init__(self, weight=1):
        self.weight = weight
        self.dispatched = [None]


def test_plan_resume_counts_done_trials_and_puts_least_tuned_first():
    from c2f_edge.tune.resume import plan_resume

    tasks = [_Task() for _ in range(4)]
    order, left, done = plan_resume(tasks, [16, 0, 32, 0], trials=100, trials_per_round=16, max_tasks=None)
    assert done == 48 and left == 52
    assert order == [1, 3, 0, 2]
    _, left, _ = plan_resume(tasks, [64, 64, 0, 0], trials=100, trials_per_round=16, max_tasks=None)
    assert left == 0


def test_bad_rpc_options_are_usage_errors(tiny_onnx, tmp_path):
    from c2f_edge.tune import TuneConfig, tune

    with pytest.raises(UsageError, match="--rpc-key"):
        tune(TuneConfig(target="host", onnx=str(tiny_onnx), work_dir=str(tmp_path / "w"), rpc_tracker="127.0.0.1:1"))
    with pytest.raises(UsageError, match="alternatives"):
        tune(TuneConfig(target="host", onnx=str(tiny_onnx), work_dir=str(tmp_path / "w"), rpc="127.0.0.1:1",
                        rpc_tracker="127.0.0.1:2", rpc_key="k"))
    with pytest.raises(UsageError, match="HOST:PORT"):
        tune(TuneConfig(target="host", onnx=str(tiny_onnx), work_dir=str(tmp_path / "w"), rpc="nohostport"))


def test_cross_target_without_board_is_refused(tiny_onnx, tmp_path):
    from c2f_edge.tune import TuneConfig, tune

    with pytest.raises(UsageError, match="not this machine"):
        tune(TuneConfig(target="arm64", onnx=str(tiny_onnx), work_dir=str(tmp_path / "w")))


def test_unreachable_tracker_is_a_remote_error(tiny_onnx, tmp_path):
    from c2f_edge.board.rpc import free_port
    from c2f_edge.core.errors import RemoteError
    from c2f_edge.tune import TuneConfig, tune

    with pytest.raises(RemoteError):
        tune(TuneConfig(target="host", onnx=str(tiny_onnx), work_dir=str(tmp_path / "w"),
                        rpc_tracker=f"127.0.0.1:{free_port()}", rpc_key="nobody"))
    assert not (tmp_path / "w" / tuning_db.RECORD_FILE).exists()


def test_cli_reports_usage_errors(capsys):
    from c2f_edge.cli import main

    assert main(["tune", "--target", "host", "--rpc-key", "k", "--onnx", "x.onnx"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "hint:" in err


def test_kernels_are_measured_with_the_targets_core_count():
    from c2f_edge.tune.measure import measure_threads

    assert measure_threads({"kind": "llvm", "mcpu": "znver3", "num-cores": 2}) == 2
    assert measure_threads({"kind": "opencl", "host": {"kind": "llvm", "num-cores": 4}}) == 4
    assert measure_threads({"kind": "llvm"}) is None


# --- a real tuning run on the tiny net -----------------------------------------------------------------

def test_tuning_writes_a_database_with_meta(tiny_tuned, tiny_onnx):
    import onnx

    from c2f_edge.backend import targets
    from c2f_edge.core.onnx_file import graph_signature

    log = tuning_db.read_log(tiny_tuned)
    # MetaSchedule checks the budget between rounds, so it may measure a few more than asked.
    assert 8 <= log.n_records <= 8 + 4
    assert _measured_ok(tiny_tuned) >= 1, "no candidate was measured successfully"
    m = log.meta
    import tvm

    assert m["tvm_version"] == tvm.__version__
    assert m["target_name"] == "host"
    assert m["target"] == targets.get("host").to_json()
    assert m["graph_signature"] == graph_signature(onnx.load(str(tiny_onnx)))
    assert m["trials"] == log.n_records and m["input_shape"] == [1, 3, 32, 32]
    assert m["threads"] == targets.get("host").to_json()["num-cores"]  # measured as deployed
    assert m["machine"]["kind"] == "local" and m["machine"]["cores"] >= 1 and m["machine"]["cpu"]
    assert m["tuning_time_s"] > 0 and m["date"]
    # The search chose from 32 x --trials-per-round 4 candidates a round, not MetaSchedule's 512.
    assert m["search_population"] == 128
    logs = "".join(p.read_text() for p in (tiny_tuned / "logs").glob("*task_*.log"))
    sampled = [int(n) for n in re.findall(r"Sampled (\d+) candidate", logs)]
    assert sampled and max(sampled) <= 128, sampled
    # compile's lookup accepts it for the same target and graph
    found, note = tuning_db.find_log("host", targets.get("host").to_json(), m["graph_signature"],
                                     explicit=str(tiny_tuned))
    assert found is not None and "tuned" in note


def test_every_task_starts_from_its_measured_default_schedule(tiny_tuned, tiny_onnx):
    """8 trials cannot search 5 tasks, yet every task has a record: the default schedule, measured first,
    so replaying the log is never slower than the untuned build."""
    from c2f_edge.backend import targets
    from c2f_edge.backend.schedules import schedule_func
    from c2f_edge.backend.targets import as_target
    from c2f_edge.backend.tvm_build import open_database
    from c2f_edge.tune.tasks import extract_tasks

    target_json = targets.get("host").to_json()
    tasks = extract_tasks(tiny_onnx, target_json)
    db = open_database(tiny_tuned)
    records = db.get_all_tuning_records()
    assert len(tasks) == 5 and len(records) == tuning_db.read_log(tiny_tuned).n_records
    target = as_target(target_json)
    for t in tasks:
        mod = t.dispatched[0]
        assert db.has_workload(mod), t.task_name
        ours = schedule_func(mod["main"], target).trace
        mine = [r for r in records if r.workload.same_as(db.commit_workload(mod))]
        assert any(str(r.trace) == str(ours) for r in mine), f"{t.task_name}: no default-schedule record"
        assert all(r.run_secs and max(float(s) for s in r.run_secs) < 1e9 for r in mine[:1])


def test_replay_builds_from_the_database_without_measuring(tiny_tuned, tiny_onnx):
    import onnxruntime as ort
    import tvm

    from c2f_edge.backend import targets, tvm_build

    before = _sha(tiny_tuned)
    target = targets.get("host").to_json()
    mod, params = tvm_build.import_onnx(str(tiny_onnx))
    ex = tvm_build.build(mod, params, target, database=tvm_build.open_database(tiny_tuned))
    vm = tvm.runtime.vm.VirtualMachine(ex, tvm.cpu())
    x = np.random.default_rng(1).standard_normal((1, 3, 32, 32)).astype(np.float32)
    out = vm["main"](tvm.runtime.tensor(x)).numpy()
    ref = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    np.testing.assert_allclose(out, ref, atol=1e-4)
    assert _sha(tiny_tuned) == before, "replaying the log changed the database"


def test_work_dir_for_another_target_or_model_is_refused(tiny_tuned, tiny_onnx, tmp_path):
    from c2f_edge.tune import TuneConfig, tune

    other = tmp_path / "other"
    shutil.copytree(tiny_tuned, other)
    meta = json.loads((other / "meta.json").read_text())
    meta["target"] = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}
    (other / "meta.json").write_text(json.dumps(meta))
    n = len(tuning_records(other))
    with pytest.raises(UsageError, match="something else"):
        tune(TuneConfig(target="host", trials=16, onnx=str(tiny_onnx), work_dir=str(other)))
    assert len(tuning_records(other)) == n


def test_nothing_left_to_do_measures_nothing(tiny_tuned, tiny_onnx, tmp_path):
    from c2f_edge.tune import TuneConfig, tune

    work = tmp_path / "again"
    shutil.copytree(tiny_tuned, work)
    before = _sha(work)
    log = tune(TuneConfig(target="host", trials=8, onnx=str(tiny_onnx), work_dir=str(work), trials_per_round=4))
    assert _sha(work) == before and log.meta["trials"] == log.n_records


def test_tuning_leaves_the_callers_log_handlers_alone(tiny_onnx, tmp_path, capfd):
    """An unnamed handler on MetaSchedule's logger (pytest's log capture, a notebook's) used to crash
    MetaSchedule's logger setup (`None.format`); it must keep receiving records and stay attached."""
    import logging

    from c2f_edge.tune import TuneConfig, tune
    from c2f_edge.tune.logs import MS_LOGGER

    seen = []

    class Collect(logging.Handler):
        def emit(self, record):
            seen.append(record.name)

    ms_logger = logging.getLogger(MS_LOGGER)
    mine = Collect()
    assert mine.get_name() is None
    ms_logger.addHandler(mine)
    level = ms_logger.level
    try:
        work = tmp_path / "log"
        log = tune(TuneConfig(target="host", trials=4, onnx=str(tiny_onnx), work_dir=str(work),
                              trials_per_round=4, max_tasks=1, verbose=True))
        assert mine in ms_logger.handlers and ms_logger.level == level
    finally:
        ms_logger.removeHandler(mine)
    assert log.n_records >= 4
    assert seen, "the caller's handler got no MetaSchedule record"
    # MetaSchedule's own logs still go to the work dir: the scheduler's, and one per tuned task.
    logs = {p.name: p.read_text() for p in (work / "logs").glob("*.log")}
    assert logs.pop(f"{MS_LOGGER}.task_scheduler.log").strip()
    assert len(logs) == 1 and next(iter(logs)).startswith(f"{MS_LOGGER}.task_0_")
    assert next(iter(logs.values())).strip(), "the task's log is empty"
    # -v shows the scheduler's progress on the console too
    assert "Task" in capfd.readouterr().err
    # and nothing of ours is left on the loggers after the run
    assert all(not isinstance(h, logging.FileHandler) for h in ms_logger.handlers)


def test_interrupted_tuning_resumes_without_losing_records(tiny_onnx, tmp_path):
    """Ctrl-C a real `c2f-edge tune` mid-run, then run it again: records only grow, the budget is the total."""
    work = tmp_path / "log"
    err = interrupt_tune(["--target", "host", "--onnx", str(tiny_onnx), "--trials", "400", "--trials-per-round",
                          "4"], work, min_records=4)
    assert "interrupted" in err
    first = tuning_records(work)
    n1 = len(first)
    meta = json.loads((work / "meta.json").read_text())
    assert 4 <= meta["trials"] <= n1 + 4  # meta follows the records round by round

    from c2f_edge.tune import TuneConfig, tune

    log = tune(TuneConfig(target="host", trials=n1 + 4, onnx=str(tiny_onnx), work_dir=str(work), trials_per_round=4))
    n2 = log.n_records
    assert n2 >= n1 + 4, f"records dropped or not resumed: {n1} -> {n2}"
    assert log.meta["trials"] >= n1 + 4
    assert tuning_records(work)[:n1] == first, "the records of the interrupted run changed"


def test_tuning_over_rpc_tracker_measures_on_the_server(tiny_onnx, tmp_path):
    """Tracker and host RPC server on 127.0.0.1, started here and stopped by pid: RPCRunner path."""
    from c2f_edge.board import rpc
    from c2f_edge.tune import TuneConfig, tune

    work = tmp_path / "rpc-log"
    tracker = rpc.start_tracker()
    server = None
    try:
        server = rpc.start_host_server(tracker=tracker, key="c2f-tune-test")
        log = tune(TuneConfig(target="host", trials=4, onnx=str(tiny_onnx), work_dir=str(work), trials_per_round=4,
                              rpc_tracker=tracker.address, rpc_key="c2f-tune-test", max_tasks=1))
    finally:
        for svc in (server, tracker):
            if svc is not None:
                pid = svc.pid
                svc.stop()
                assert not rpc._group_members(pid), f"process group {pid} still alive"
    assert 4 <= log.n_records <= 8
    assert _measured_ok(work) >= 1, "no candidate ran on the RPC server"
    m = log.meta["machine"]
    assert m["kind"] == "rpc" and m["key"] == "c2f-tune-test" and m["tracker"] == tracker.address


# --- the real model: tune a kernel, compile from the log, compare with PyTorch -----------------------------

@pytest.mark.slow
def test_compile_applies_a_conv2former_log_and_matches_pytorch(c2f_tuned, onnx_artifact, tmp_path):
    import torch

    from c2f_edge.compile import CompileConfig, compile_bundle, load_bundle
    from c2f_edge.core.images import photo_batch
    from c2f_edge.core.metrics import logit_metrics
    from c2f_edge.models.weights import load_model

    log = tuning_db.read_log(c2f_tuned)
    assert log.n_records >= 4 and _measured_ok(c2f_tuned) >= 1
    before = _sha(c2f_tuned)
    bundle = compile_bundle(CompileConfig(target="host", onnx=str(onnx_artifact / "model.onnx"),
                                          tuning_log=str(c2f_tuned), out=str(tmp_path / "bundle")))
    assert _sha(c2f_tuned) == before, "compile measured or rewrote the tuning log"
    man = json.loads((bundle / "manifest.json").read_text())
    assert man["tuning"]["status"] == "tuned" and man["tuning"]["log"]["records"] == log.n_records
    # the log's one tuned task (and its default-schedule record) scheduled a kernel of this build
    assert 1 <= man["tuning"]["kernels"]["from_log"] < man["tuning"]["kernels"]["total"]

    x = photo_batch(2)
    model, _ = load_model("n", weights="synthetic", seed=0)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    res = logit_metrics(ref, load_bundle(bundle)(x))
    assert res["max_abs_diff"] < 1e-4 and res["top1_agreement"] == 1.0, res


@pytest.mark.slow
def test_tuning_leaves_out_the_kernels_a_split_reduction_build_schedules(onnx_artifact, tmp_path, capsys):
    """host builds take the split reduction (targets/host.toml): their records for its kernels would go
    unused, so tune does not spend trials on them."""
    from c2f_edge.backend import targets
    from c2f_edge.tune import TuneConfig
    from c2f_edge.tune.stage import _plan, _resolve

    cfg = TuneConfig(target="host", trials=64, onnx=str(onnx_artifact / "model.onnx"), work_dir=str(tmp_path / "w"))
    job = _resolve(cfg)
    cores = targets.get("host").to_json()["num-cores"]
    assert job.split_reduction is (cores >= 2)
    _plan(job)
    names = {t.task_name for t in job.tasks}
    left_out = {"fused_conv2d13_add10_add11", "fused_conv2d17_add14_add15", "fused_matmul_add19"}
    if cores >= 2:
        assert not names & left_out and len(names) == 40
        assert "3 kernels left untuned: host's builds take the split reduction" in capsys.readouterr().err
    else:
        assert left_out <= names
