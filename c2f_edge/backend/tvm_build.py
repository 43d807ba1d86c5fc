"""TVM Relax: ONNX import, build and export.

Small public functions with stable signatures; the compile stage (bundles) and the tune stage
(MetaSchedule) both build on them:

    mod, params = import_onnx("build/onnx/model.onnx")
    ex = build(mod, params, target, database=db)    # db: a MetaSchedule Database or None
    export_library(ex, "model.so", fcompile)        # fcompile from backend.crosslink

The passes a build runs are listed, in order, in backend/pipeline.py.
"""

from __future__ import annotations

import os
from pathlib import Path

from c2f_edge.backend.pipeline import pipeline
from c2f_edge.backend.targets import as_target, check_codegen
from c2f_edge.core.errors import ArtifactError, C2FError, ToolchainError, first_line
from c2f_edge.core.onnx_file import INPUT_NAME, load_onnx, static_input_shape


def import_onnx(onnx_path, shape: list[int] | None = None, input_name: str = INPUT_NAME):
    """ONNX file (or loaded ModelProto) -> (IRModule with weights as inputs of `main`, {"main": [weights]}).

    The weights are kept as function inputs (keep_params_in_input) and detached, so a caller can bind
    them (`build` does), tune on the weight-free graph, or save them apart.
    """
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    if isinstance(onnx_path, (str, os.PathLike)):
        model = load_onnx(onnx_path)
    else:
        model = onnx_path
    if shape is None:
        shape = static_input_shape(model, input_name)
    try:
        mod = from_onnx(model, shape_dict={input_name: list(shape)}, keep_params_in_input=True)
    except Exception as e:  # the frontend raises bare TVMError/KeyError/... on unsupported graphs
        raise ArtifactError(f"TVM could not import the ONNX graph: {first_line(e)}",
                            hint="export it with `c2f-edge export` (opset 20, simplified); -v for details") from e
    mod, params = relax.frontend.detach_params(mod)
    return mod, params


def bind_params(mod, params):
    """Bind detached weights back as constants of `main` (they then live inside the compiled module)."""
    from tvm import relax

    if not params or not params.get("main"):
        return mod
    func = mod["main"]
    weights = func.params[-len(params["main"]):]  # keep_params_in_input puts them after the data input
    return relax.transform.BindParams("main", dict(zip(weights, params["main"])))(mod)


def open_database(log_dir):
    """A MetaSchedule JSONDatabase over a tuning log directory (read-only use: replay, no measurement).
    Pass it a directory from tuning_db.readable(): MetaSchedule itself gives up on the first bad line."""
    from tvm.s_tir import meta_schedule as ms

    from c2f_edge.backend.tuning_db import RECORD_FILE, WORKLOAD_FILE

    log_dir = Path(log_dir)
    try:
        return ms.database.JSONDatabase(path_workload=str(log_dir / WORKLOAD_FILE),
                                        path_tuning_record=str(log_dir / RECORD_FILE), allow_missing=False)
    except Exception as e:
        raise ArtifactError(f"cannot read the tuning log {log_dir}: {first_line(e)}",
                            hint="re-run `c2f-edge tune`, or build untuned with --tuning-log none") from e


def build(mod, params, target, database=None, applied=None, blocked: bool = True, precision=None,
          split_reduction: bool = False):
    """Compile an imported module (weights bound into it) -> tvm.relax.Executable.

    target: Target / JSON dict (with "host" for GPUs). database: MetaSchedule Database or None.
    applied: a pipeline.TuningApplied to fill in (how many kernels the database scheduled).
    blocked=False: CPU activations stay NCHW (an ablation; see pipeline.legalize_and_fuse).
    precision: a backend.precision.Precision (default FP32).
    split_reduction: the schedule of backend/schedules/split_reduction.py (the compile stage decides).
    """
    import tvm

    from c2f_edge.backend.precision import FP32

    target = as_target(target)
    check_codegen(target)
    mod = bind_params(mod, params)
    try:
        return tvm.compile(mod, target=target, relax_pipeline=pipeline(target, database, applied, blocked,
                                                                          precision or FP32, split_reduction))
    except C2FError:
        raise
    except Exception as e:  # TVM raises many types (InternalError, ValueError, ...) from its passes
        raise ToolchainError(f"TVM failed to compile for {target.kind.name}: {first_line(e)}",
                             hint="run with -v for the full TVM error") from e


def export_library(ex, path, fcompile=None) -> Path:
    """Write the executable as one shared object (`fcompile` links it; None = this machine's compiler)."""
    path = Path(path)
    try:
        ex.export_library(str(path), fcompile=fcompile)
    except ToolchainError:
        raise
    except Exception as e:
        raise ToolchainError(f"linking {path.name} failed: {first_line(e)}",
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
