"""TVM Relax: ONNX import, the per-target pipeline, build and export.

Small public functions with stable signatures; `c2f_edge.compile` (bundles) and `c2f_edge.tune`
(MetaSchedule) both build on them:

    mod, params = import_onnx("build/onnx/model.onnx")
    fused = legalize_and_fuse(mod, target)          # what MetaSchedule extracts tasks from
    ex = build(mod, params, target, database=db)    # db: a MetaSchedule Database or None
    export_library(ex, "model.so", fcompile)        # fcompile from c2f_edge.backend.crosslink
"""

from __future__ import annotations

import os
from pathlib import Path

from c2f_edge.core.errors import ArtifactError, C2FError, ToolchainError, UnsupportedError

INPUT_NAME = "input"


def as_target(target):
    """A tvm.target.Target from a Target, a JSON dict or a JSON string (TVM 0.27 takes dicts only)."""
    import json

    import tvm

    if isinstance(target, tvm.target.Target):
        return target
    if isinstance(target, str) and target.lstrip().startswith("{"):
        target = json.loads(target)
    return tvm.target.Target(target)


def is_gpu(target) -> bool:
    return "gpu" in as_target(target).keys


def import_onnx(onnx_path, shape: list[int] | None = None, input_name: str = INPUT_NAME):
    """ONNX file (or loaded ModelProto) -> (IRModule with weights as inputs of `main`, {"main": [weights]}).

    The weights are kept as function inputs (keep_params_in_input) and detached, so a caller can bind
    them (`build` does), tune on the weight-free graph, or save them apart.
    """
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    if isinstance(onnx_path, (str, os.PathLike)):
        from c2f_edge.export.stage import load_onnx

        model = load_onnx(onnx_path)
    else:
        model = onnx_path
    if shape is None:
        shape = static_input_shape(model, input_name)
    try:
        mod = from_onnx(model, shape_dict={input_name: list(shape)}, keep_params_in_input=True)
    except Exception as e:  # the frontend raises bare TVMError/KeyError/... on unsupported graphs
        raise ArtifactError(f"TVM could not import the ONNX graph: {_first_line(e)}",
                            hint="export it with `c2f-edge export` (opset 20, simplified); -v for details") from e
    mod, params = relax.frontend.detach_params(mod)
    return mod, params


def static_input_shape(model, input_name: str) -> list[int]:
    for v in model.graph.input:
        if v.name == input_name:
            dims = [d.dim_value if d.HasField("dim_value") else 1 for d in v.type.tensor_type.shape.dim]
            return dims  # a symbolic batch becomes 1: edge inference is batch 1
    raise ArtifactError(f"the ONNX model has no input named {input_name!r}",
                        hint="export it with `c2f-edge export`, which names the input `input`")


def bind_params(mod, params):
    """Bind detached weights back as constants of `main` (they then live inside the compiled module)."""
    from tvm import relax

    if not params or not params.get("main"):
        return mod
    func = mod["main"]
    weights = func.params[-len(params["main"]):]  # keep_params_in_input puts them after the data input
    return relax.transform.BindParams("main", dict(zip(weights, params["main"])))(mod)


def legalize_and_fuse(mod, target, blocked: bool = True):
    """Inference decompositions + legalize to TIR + fuse: the form MetaSchedule extracts tasks from.

    The same sequence runs inside `build`, so tuning records match the workloads of the build.
    blocked=False keeps CPU activations NCHW (what channel counts that are no multiple of the lanes get).
    """
    import tvm

    target = as_target(target)
    with target:
        return tvm.transform.Sequential(_legalize_and_fuse_passes(cpu=not is_gpu(target), blocked=blocked))(mod)


def _legalize_and_fuse_passes(cpu: bool, blocked: bool = True):
    """Built inside `with target:`; the CPU conv packing reads the vector width from Target.current()."""
    import tvm
    from tvm.relax import transform as T

    custom = {"relax.nn.gelu": _gelu_fast_erf}
    first, layout = [], []
    if cpu:
        from c2f_edge.backend.passes.block_channels import to_blocked
        from c2f_edge.backend.legalize.conv2d_packed import conv2d_legalizer
        from c2f_edge.backend.passes.fuse_channel_norm import fuse_channel_norm, layer_norm_legalizer
        from c2f_edge.backend.schedules import cpu_spec

        lanes = cpu_spec(tvm.target.Target.current()).lanes
        # dense convs with weights prepacked for the CPU schedules (c2f_edge.cpu_layout)
        custom["relax.nn.conv2d"] = conv2d_legalizer(lanes)
        # the channels-first LayerNorm as one kernel (c2f_edge.cpu_norm)
        first.append(fuse_channel_norm())
        custom["relax.nn.layer_norm"] = layer_norm_legalizer()
        if blocked:  # activations in channel blocks of one vector (c2f_edge.cpu_blocked), batch norms decomposed
            layout.append(to_blocked(lanes))
    return [*first, T.DecomposeOpsForInference(), *layout, T.CanonicalizeBindings(),
            T.LegalizeOps(customize_legalize_map=custom), T.AnnotateTIROpPattern(),
            T.FoldConstant(), T.FuseOps(), T.FuseTIR()]


def _gelu_fast_erf(bb, call):
    """GELU with TOPI's polynomial erf: the stock legalization calls scalar libm erff, never vectorized."""
    from tvm import tirx, topi

    def te_gelu(x):
        one_half = tirx.const(0.5, x.dtype)
        return x * (one_half + topi.fast_erf(x * tirx.const(0.5**0.5, x.dtype)) * one_half)

    return bb.call_te(te_gelu, call.args[0], primfunc_name_hint="gelu")


def gpu_default_schedule():
    """dlight default schedules: every GPU PrimFunc needs thread bindings; tuned ones are left as they are."""
    from tvm.s_tir import dlight as dl

    return dl.ApplyDefaultSchedule(dl.gpu.Matmul(), dl.gpu.GEMV(), dl.gpu.Reduction(),
                                   dl.gpu.GeneralReduction(), dl.gpu.Fallback())


def cpu_default_schedule():
    """c2f-edge's CPU rules (tiled, parallel, vectorized); tuned functions are left as they are."""
    from c2f_edge.backend.schedules import default_schedule

    return default_schedule()


def pipeline(target, database=None):
    """The Relax pipeline for one target: legalize/fuse, apply tuning records, GPU schedules, lower.

    database: a MetaSchedule Database to replay (no measurement), or None for untuned kernels.
    """
    import tvm
    from tvm.relax import backend
    from tvm.relax import transform as T

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
            passes = [backend.DispatchSampling(), backend.DispatchSortScan(), *_legalize_and_fuse_passes(cpu=not gpu)]
            if database is not None:
                passes.append(T.MetaScheduleApplyDatabase(enable_warning=False))
            passes.append(gpu_default_schedule() if gpu else cpu_default_schedule())
            passes += lower.dataflow_lower_passes(target) + lower.finalize_passes(target)
            if database is None:
                return tvm.transform.Sequential(passes)(mod)
            with database:
                return tvm.transform.Sequential(passes)(mod)

    return _pipeline


def open_database(log_dir):
    """A MetaSchedule JSONDatabase over a tuning log directory (read-only use: replay, no measurement)."""
    from tvm.s_tir import meta_schedule as ms

    from c2f_edge.backend.tuning_db import RECORD_FILE, WORKLOAD_FILE

    log_dir = Path(log_dir)
    return ms.database.JSONDatabase(path_workload=str(log_dir / WORKLOAD_FILE),
                                    path_tuning_record=str(log_dir / RECORD_FILE), allow_missing=False)


def check_codegen(target) -> None:
    """Fail early, with a clear message, when this TVM wheel cannot generate code for the target."""
    import tvm

    target = as_target(target)
    for t in (target, target.host) if target.host is not None else (target,):
        kind = t.kind.name
        if tvm.get_global_func(f"target.build.{kind}", allow_missing=True) is None:
            raise UnsupportedError(
                f"the installed TVM wheel (apache-tvm {tvm.__version__}) has no {kind} code generator "
                f"(target.build.{kind} is missing)",
                hint=f"build TVM from source with {kind} enabled, or pick a target from `c2f-edge targets`")


def build(mod, params, target, database=None):
    """Compile an imported module (weights bound into it) -> tvm.relax.Executable.

    target: Target / JSON dict (with "host" for GPUs). database: MetaSchedule Database or None.
    """
    import tvm

    target = as_target(target)
    check_codegen(target)
    mod = bind_params(mod, params)
    try:
        return tvm.compile(mod, target=target, relax_pipeline=pipeline(target, database))
    except C2FError:
        raise
    except Exception as e:  # TVM raises many types (InternalError, ValueError, ...) from its passes
        raise ToolchainError(f"TVM failed to compile for {target.kind.name}: {_first_line(e)}",
                             hint="run with -v for the full TVM error") from e


def export_library(ex, path, fcompile=None) -> Path:
    """Write the executable as one shared object (`fcompile` links it; None = this machine's compiler)."""
    path = Path(path)
    try:
        ex.export_library(str(path), fcompile=fcompile)
    except ToolchainError:
        raise
    except Exception as e:
        raise ToolchainError(f"linking {path.name} failed: {_first_line(e)}",
                             hint="check the cross-linker (--cross-compiler); run with -v for its output") from e
    return path


def imported_kinds(lib) -> list[str]:
    """Kinds of the modules packed into an exported library (e.g. ['opencl'] for a GPU bundle)."""
    out = []
    stack = list(lib.imports)
    while stack:
        m = stack.pop()
        out.append(m.kind)
        stack.extend(m.imports)
    return out


def _first_line(e: BaseException) -> str:
    lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines and lines[0].startswith("Traceback") else (lines[0] if lines else type(e).__name__))[:300]
