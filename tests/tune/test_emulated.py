"""Tuning without the board: the emulated runner scores candidates by their estimated time on an emulated
Cortex-A76, all of a round in one qemu run."""

from __future__ import annotations

import shutil

import pytest

from c2f_edge.board import insn_count

pytestmark = [pytest.mark.emulated, pytest.mark.filterwarnings("ignore::DeprecationWarning"),
              pytest.mark.skipif(not shutil.which(insn_count.QEMU), reason="the dynamic qemu-aarch64 (Debian "
                                 "qemu-user) is not installed: make setup-system")]

N = 64


def _matmul():
    import tvm
    from tvm import te

    a, b = te.placeholder((N, N), name="A"), te.placeholder((N, N), name="B")
    k = te.reduce_axis((0, N), name="k")
    c = te.compute((N, N), lambda i, j: te.sum(a[i, k] * b[k, j], axis=k), name="C")
    return tvm.IRModule({"main": te.create_prim_func([a, b, c])})


def _schedules():
    """The same matmul twice: j innermost and vectorized by 4 (fast), and k innermost on one lane with the
    loads strided (slow)."""
    import tvm

    fast = tvm.s_tir.Schedule(_matmul())
    blk = fast.get_sblock("C")
    i, j, k = fast.get_loops(blk)
    jo, ji = fast.split(j, [None, 4])
    fast.reorder(i, k, jo, ji)
    fast.vectorize(ji)
    slow = tvm.s_tir.Schedule(_matmul())
    return {"fast": fast.mod, "slow": slow.mod}


@pytest.fixture(scope="module")
def built():
    from tvm.s_tir.meta_schedule.arg_info import ArgInfo
    from tvm.s_tir.meta_schedule.builder import BuilderInput

    from c2f_edge.backend import crosslink, targets
    from c2f_edge.backend.builder import PoolBuilder
    from c2f_edge.backend.targets import as_target

    spec = targets.get("rpi5")
    builder = PoolBuilder(max_workers=1, timeout_sec=300, fcompile=crosslink.linker_for(spec, None))
    try:
        mods = _schedules()
        results = builder.build([BuilderInput(m, as_target(spec.to_json())) for m in mods.values()])
    finally:
        builder.shutdown()
    assert all(r.error_msg is None for r in results), [r.error_msg for r in results]
    args = ArgInfo.from_prim_func(_matmul()["main"])
    return {name: (r.artifact_path, args) for name, r in zip(mods, results, strict=True)}


def test_the_core_is_the_targets_and_only_aarch64_cpu_targets_are_emulated():
    from c2f_edge.core.errors import UsageError
    from c2f_edge.tune.measure import emulated_machine, resolve_target

    assert emulated_machine("rpi4", resolve_target("rpi4")[1], None)["cpu"] == "cortex-a72"  # a TVM tag
    rpi5 = emulated_machine("rpi5", resolve_target("rpi5")[1], None)
    assert rpi5["cpu"] == "cortex-a76" and rpi5["cycle_model"]["clock_ghz"] == 2.4
    with pytest.raises(UsageError, match="--emulated tunes aarch64 CPU targets; 'host'"):
        emulated_machine("host", resolve_target("host")[1], None)


def test_a_slow_schedule_scores_above_a_fast_one(built, tmp_path):
    from tvm.s_tir.meta_schedule.runner import RunnerInput

    from c2f_edge.tune.emulated import EmulatedRunner

    runner = EmulatedRunner("cortex-a76", tmp_path)
    names = ["fast", "slow", "fast"]
    inputs = [RunnerInput(built[n][0], "cpu", built[n][1]) for n in names]
    results = [f.result() for f in runner.run(inputs)]
    assert all(r.error_msg is None for r in results), [r.error_msg for r in results]
    fast, slow, again = (float(r.run_secs[0]) for r in results)
    assert fast == again  # deterministic: the same kernel scores the same
    assert slow > 2 * fast
    assert runner.batches == 1  # the whole round in one qemu run


def test_a_failing_candidate_is_an_error_and_the_others_still_score(built, tmp_path):
    from tvm.s_tir.meta_schedule.arg_info import TensorInfo
    from tvm.s_tir.meta_schedule.runner import RunnerInput

    from c2f_edge.tune.emulated import EmulatedRunner

    path, args = built["fast"]
    wrong = [TensorInfo("float32", [N, N]), TensorInfo("float32", [N, N])]  # one argument short
    results = [f.result() for f in EmulatedRunner("cortex-a76", tmp_path).run(
        [RunnerInput(path, "cpu", wrong), RunnerInput(path, "cpu", args)])]
    assert results[0].error_msg and results[0].run_secs is None
    assert results[1].error_msg is None and float(results[1].run_secs[0]) > 0


def test_tune_emulated_resumes_after_an_interrupt_and_its_log_applies(tiny_onnx, tmp_path):
    """`c2f-edge tune --target rpi5 --emulated`, Ctrl-C mid-run, the same command again: no record lost, the
    log says its costs are estimates, and compile applies it."""
    import json

    from c2f_edge.compile import CompileConfig, compile_bundle
    from c2f_edge.tune import TuneConfig, tune
    from tests.fixtures.tuning import interrupt_tune

    work = tmp_path / "log"
    records = work / "database_tuning_record.json"
    err = interrupt_tune(["--target", "rpi5", "--emulated", "--onnx", str(tiny_onnx), "--trials", "400",
                          "--trials-per-round", "2", "--max-tasks", "1"], work, min_records=3)
    assert "interrupted" in err
    first = records.read_text().splitlines()
    log = tune(TuneConfig(target="rpi5", emulated=True, trials=len(first) + 2, onnx=str(tiny_onnx),
                          work_dir=str(work), trials_per_round=2, max_tasks=1))
    assert log.n_records >= len(first) + 2
    assert records.read_text().splitlines()[:len(first)] == first, "the records of the interrupted run changed"
    machine = json.loads((work / "meta.json").read_text())["machine"]
    assert machine["kind"] == "emulated" and machine["cpu"] == "cortex-a76"
    assert machine["cost"].startswith("ESTIMATED seconds, not measured")
    bundle = tmp_path / "bundle"
    compile_bundle(CompileConfig(target="rpi5", onnx=str(tiny_onnx), tuning_log=str(work), out=str(bundle),
                                 verify="none"))
    tuning = json.loads((bundle / "manifest.json").read_text())["tuning"]
    assert tuning["status"] == "tuned" and tuning["kernels"]["from_log"] >= 1


def test_tune_fp16_tunes_the_fp16_kernels_into_their_own_log(tiny_conv2former_onnx, tmp_path):
    """`tune --precision fp16`: the log records its precision, holds the fp16 kernels, and applies to the
    fp16 build only; a core without fp16 is refused before anything is measured."""
    import json

    from c2f_edge.compile import CompileConfig, compile_bundle
    from c2f_edge.core.errors import UsageError
    from c2f_edge.tune import TuneConfig, tune

    with pytest.raises(UsageError, match="rpi4 .* has no fp16 arithmetic"):
        tune(TuneConfig(target="rpi4", emulated=True, precision="fp16", onnx=str(tiny_conv2former_onnx),
                        work_dir=str(tmp_path / "refused")))
    assert not (tmp_path / "refused").exists()
    work = tmp_path / "log"
    tune(TuneConfig(target="rpi5", emulated=True, precision="fp16", trials=2, trials_per_round=2, max_tasks=1,
                    onnx=str(tiny_conv2former_onnx), work_dir=str(work)))
    assert json.loads((work / "meta.json").read_text())["precision"] == "fp16"
    bundle = tmp_path / "bundle"
    compile_bundle(CompileConfig(target="rpi5", onnx=str(tiny_conv2former_onnx), tuning_log=str(work),
                                 out=str(bundle), verify="none", precision="fp16"))
    # its records are the fp16 kernels' (an fp32 kernel's workload would match none of them)
    assert json.loads((bundle / "manifest.json").read_text())["tuning"]["kernels"]["from_log"] >= 1
