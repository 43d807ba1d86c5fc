"""The Relax pipeline of a build, in order, and its version.

    legalize_and_fuse(mod, target)   the form MetaSchedule extracts tasks from (tuning records are
                                     keyed on these kernels, so the build runs the same phases)
    pipeline(target, database)       legalize and fuse, replay tuning records, default schedules, lower

Phases, in order: CPU graph rewrites (passes/), inference decompositions, mixed precision (fp16
builds: Relax's ToMixedPrecision, see precision.py), the blocked layout (passes/), legalization
(stock, plus legalize/), fusion; then tuning records, the default schedules
(schedules/ on CPUs, dlight on GPUs) and TVM's own lowering for the device.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

from c2f_edge.backend.precision import FP32, Precision
from c2f_edge.backend.targets import as_target, is_gpu

# Bump when a change here (or in passes/, legalize/, schedules/ where it changes which kernels are
# built) alters the kernels: tuning logs record it, and old records would otherwise silently stop matching.
PIPELINE_VERSION = 6


@functools.cache
def source_digest() -> str:
    """A digest of the backend's source (every .py under backend/): bundle manifests record it, so that a
    cached build is not reused after a schedule change that did not bump PIPELINE_VERSION."""
    h = hashlib.sha256()
    root = Path(__file__).parent
    for path in sorted(root.rglob("*.py")):
        h.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def legalize_and_fuse(mod, target, blocked: bool = True, precision: Precision = FP32):
    """Inference decompositions + legalize to TIR + fuse: the form MetaSchedule extracts tasks from.

    blocked=False keeps CPU activations NCHW (what channel counts that are no multiple of the lanes get).
    """
    import tvm

    target = as_target(target)
    with target:
        passes = legalize_and_fuse_passes(cpu=not is_gpu(target), blocked=blocked, precision=precision)
        return tvm.transform.Sequential(passes)(mod)


def legalize_and_fuse_passes(cpu: bool, blocked: bool = True, precision: Precision = FP32) -> list:
    """Built inside `with target:`; the CPU conv packing reads the vector width from Target.current()."""
    import tvm
    from tvm.relax import transform as T

    from c2f_edge.backend.legalize.gelu import gelu_legalizer

    precision = precision.for_device(gpu=not cpu)
    custom = {"relax.nn.gelu": gelu_legalizer(precision.gelu, bind=not cpu)}
    rewrites, layout = [], []
    # After the decompositions, so that the inference BatchNorms (a per-channel scale and shift) run in
    # fp16 too; FoldConstant then stores the weights as fp16.
    mixed = []
    if precision.mixed:
        from c2f_edge.backend.passes.widen_classifier import widen_classifier

        mixed = [T.ToMixedPrecision(out_dtype=precision.sums), widen_classifier(), T.FoldConstant()]
    if cpu or precision.mixed:
        # The norm as one kernel, its statistics in `norm_stats` (unfused in fp16, its ops would follow the
        # fp16 input); fp32 GPU builds keep the unfused chain, and so their kernels (and tuning records).
        from c2f_edge.backend.legalize.layer_norm import layer_norm_legalizer
        from c2f_edge.backend.passes.fuse_channel_norm import fuse_channel_norm

        rewrites.append(fuse_channel_norm())
        custom["relax.nn.layer_norm"] = layer_norm_legalizer(precision.norm_stats)
    if cpu:
        from c2f_edge.backend.legalize.conv2d_packed import conv2d_legalizer
        from c2f_edge.backend.passes.block_channels import to_blocked
        from c2f_edge.backend.schedules.cpu_spec import cpu_spec

        lanes = cpu_spec(tvm.target.Target.current(), precision.dtype).lanes
        custom["relax.nn.conv2d"] = conv2d_legalizer(lanes)
        if blocked:  # the batch norms are decomposed first, so only the blocked forms remain
            # a partial sum never spans more than one register of lanes (NEON fp16: 8 products)
            layout.append(to_blocked(lanes, precision.norm_stats, min(precision.conv_chunk, lanes)))
    return [*rewrites, T.DecomposeOpsForInference(), *mixed, *layout, T.CanonicalizeBindings(),
            T.LegalizeOps(customize_legalize_map=custom), T.AnnotateTIROpPattern(),
            T.FoldConstant(), T.FuseOps(), T.FuseTIR()]


def default_schedule(gpu: bool):
    """Schedules for every kernel no tuning record covers (a record always wins): dlight's on GPUs, where
    every PrimFunc needs thread bindings; c2f-edge's CPU rules (tiled, parallel, vectorized) otherwise."""
    if gpu:
        from tvm.s_tir import dlight as dl

        return dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                       dl.gpu.GeneralReduction(), dl.gpu.Fallback())
    from c2f_edge.backend.schedules import default_schedule as cpu_default

    return cpu_default()


@dataclass
class TuningApplied:
    """How many kernels of a build took their schedule from the tuning log (filled in by `pipeline`)."""

    kernels: int = 0
    from_log: int = 0
    split: int = 0  # scheduled by --split-reduction (schedules/split_reduction.py), not by the log


def count_tuned(applied: TuningApplied):
    """A pass right after the records are applied: MetaSchedule marks each function it scheduled."""
    import tvm
    from tvm import tirx

    from c2f_edge.backend.schedules.split_reduction import ATTR as SPLIT

    def marked(f, attr):
        return f.attrs is not None and bool(f.attrs.get(attr))

    @tvm.transform.module_pass(opt_level=0, name="c2f_edge_count_tuned")
    def _count(mod, _ctx):
        funcs = [f for f in mod.functions.values() if isinstance(f, tirx.PrimFunc)]
        applied.kernels = len(funcs)
        applied.split = sum(1 for f in funcs if marked(f, SPLIT))
        applied.from_log = sum(1 for f in funcs if marked(f, "tirx.is_scheduled")) - applied.split
        return mod

    return _count


def schedule_passes(gpu: bool, database=None, applied: TuningApplied | None = None, blocked: bool = True,
                    precision: Precision = FP32, split_reduction: bool = False) -> list:
    """Every pass of a build up to scheduled kernels (before TVM's lowering): legalize and fuse, the tuning
    records, the default schedules. Built inside `with target:`, run inside `with database:`.
    split_reduction: the schedule of schedules/split_reduction.py, ahead of the records (CPUs)."""
    import tvm
    from tvm.relax import backend
    from tvm.relax import transform as T

    passes = [backend.DispatchSampling(), backend.DispatchSortScan(),
              *legalize_and_fuse_passes(cpu=not gpu, blocked=blocked, precision=precision)]
    if split_reduction and not gpu:
        from c2f_edge.backend.schedules.split_reduction import split_reduction_pass

        passes.append(split_reduction_pass(tvm.target.Target.current()))
    if database is not None:
        passes.append(T.MetaScheduleApplyDatabase(enable_warning=False))
    if applied is not None:
        passes.append(count_tuned(applied))
    if gpu:
        return [*passes, default_schedule(gpu)]
    from c2f_edge.backend.schedules.weight_prefetch import weight_prefetch_pass

    return [*passes, default_schedule(gpu), weight_prefetch_pass(tvm.target.Target.current())]


def pipeline(target, database=None, applied: TuningApplied | None = None, blocked: bool = True,
             precision: Precision = FP32, split_reduction: bool = False):
    """The Relax pipeline for one target. database: a MetaSchedule Database to replay (no
    measurement), or None for untuned kernels. applied: filled with how many kernels the log scheduled.
    blocked=False keeps CPU activations NCHW (an ablation: what the blocked layout buys).
    precision: FP32, or FP16 (precision.py) for cores with fp16 arithmetic.
    split_reduction: schedules/split_reduction.py's schedule for the kernels it fits."""
    import tvm

    target = as_target(target)
    gpu = is_gpu(target)
    # The stock lowering passes per device kind (cpu_generic's __init__ does not export them all).
    if gpu:
        from tvm.relax.backend.gpu_generic import pipeline as lower
    else:
        from tvm.relax.backend.cpu_generic import pipeline as lower

    @tvm.transform.module_pass(opt_level=0, name="c2f_edge_pipeline")
    def _pipeline(mod, _ctx):
        with target:  # some passes read Target.current() when they are constructed
            passes = schedule_passes(gpu, database, applied, blocked, precision, split_reduction)
            passes += lower.dataflow_lower_passes(target) + lower.finalize_passes(target)
            if database is None:
                return tvm.transform.Sequential(passes)(mod)
            with database:
                return tvm.transform.Sequential(passes)(mod)

    return _pipeline
