"""The tuning tasks of a model: its identity, the kernels MetaSchedule tunes (extracted from exactly the
module a build compiles), their cost, their default schedules as first records, and their contexts."""

from __future__ import annotations

import json
from pathlib import Path

from c2f_edge.backend.targets import as_target


def model_identity(onnx_path: Path) -> dict:
    """graph_signature, variant and input shape: from the export manifest, else from the graph."""
    from c2f_edge.core.onnx_file import graph_signature, load_onnx

    man_path = onnx_path.parent / "manifest.json"
    if man_path.is_file():
        man = json.loads(man_path.read_text())
        if man.get("graph_signature"):
            return {"graph_signature": man["graph_signature"], "variant": man.get("variant"),
                    "input_shape": man.get("input", {}).get("shape")}
    model = load_onnx(onnx_path)
    shape = [d.dim_value or 1 for d in model.graph.input[0].type.tensor_type.shape.dim]
    return {"graph_signature": graph_signature(model), "variant": None, "input_shape": shape}


def extract_tasks(onnx_path, target_json: dict, precision=None):
    """ONNX -> MetaSchedule tasks, from exactly the module compile builds (weights bound, legalized, fused).
    precision: a backend.precision.Precision (default fp32)."""
    from tvm.s_tir import meta_schedule as ms

    from c2f_edge.backend import tvm_build
    from c2f_edge.backend.pipeline import legalize_and_fuse
    from c2f_edge.backend.precision import FP32

    target = as_target(target_json)
    mod, params = tvm_build.import_onnx(onnx_path)
    fused = legalize_and_fuse(tvm_build.bind_params(mod, params), target, precision=precision or FP32)
    return ms.relax_integration.extract_tasks(fused, target)


def without_split(tasks, target_json: dict) -> tuple[list, int]:
    """The tasks but those backend/schedules/split_reduction.py schedules for this target (a build that
    takes the split reduction uses no record of theirs), and how many were left out."""
    from c2f_edge.backend.schedules.split_reduction import SplitReduction, cores_of

    target = as_target(target_json)
    rule = SplitReduction(cores_of(target))
    kept = [t for t in tasks if rule.apply(t.dispatched[0]["main"], target, False) is None]
    return kept, len(tasks) - len(kept)


def seed_default_schedules(tasks, target_json, builder, runner, db) -> int:
    """Measure c2f-edge's default CPU schedule of each task and commit it as a tuning record.

    A record always wins over the default at compile time, so without this a short search could
    make a kernel slower than not tuning it; with it the database's best is never the worse one.
    Returns how many tasks got a record.
    """
    from tvm.s_tir import meta_schedule as ms

    from c2f_edge.backend.schedules import schedule_func

    target = as_target(target_json)
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


def task_flops(task) -> float:
    try:
        from tvm.s_tir.analysis import estimate_tir_flops

        return float(estimate_tir_flops(task.dispatched[0]))
    except Exception:  # noqa: BLE001 - an op the estimator does not know: treat it as cheap
        return 1.0


def search_population(trials_per_round: int) -> int:
    """Candidates the evolutionary search keeps per round: MetaSchedule's 512 from 16 measured per round up
    (our default), fewer below. Checking a candidate is slow on GPU targets (about 1 minute per round of
    512 on 2 cores), and a round that measures 4 gains little from choosing among 512."""
    return max(64, min(512, 32 * trials_per_round))


def tune_contexts(tasks, loggers, seed: int | None, trials_per_round: int = 16):
    """One TuneContext per extracted task, as MetaSchedule's `extracted_tasks_to_tune_contexts` makes
    them, but with our loggers (tune.logs) and the search population of `search_population`."""
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.utils import fork_seed

    population = search_population(trials_per_round)
    contexts = [ms.TuneContext(mod=t.dispatched[0], target=t.target, space_generator="post-order-apply",
                               search_strategy=ms.search_strategy.EvolutionarySearch(population_size=population),
                               task_name=t.task_name, logger=lg, rand_state=rs, num_threads="physical").clone()
                for t, lg, rs in zip(tasks, loggers, fork_seed(seed, n=len(tasks)))]
    return contexts, [t.weight for t in tasks]
