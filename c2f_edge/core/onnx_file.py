"""The ONNX file every stage passes along: its tensor names, loading it with a clean error, its
structural identity, and an ONNX Runtime session on it."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from c2f_edge.core.artifacts import INPUT_NAME, OUTPUT_NAME, check_files, manifest_or_empty
from c2f_edge.core.errors import ArtifactError, first_line

__all__ = ["INPUT_NAME", "OUTPUT_NAME"]  # defined with the artifacts; importers of ONNX names find them here


def load_onnx(path: str | os.PathLike, check: bool = True, load_weights: bool = True):
    """Read (and by default check) an ONNX file; a missing or corrupt file is an ArtifactError."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"ONNX file not found: {path}", hint="run `c2f-edge export` first, or pass --onnx PATH")
    _check_against_manifest(path)
    try:
        model = onnx.load(str(path), load_external_data=load_weights)
        if check:
            onnx.checker.check_model(model)
    except Exception as e:  # protobuf and the checker raise several unrelated types
        raise ArtifactError(f"{path} is not a valid ONNX model: {first_line(e)}",
                            hint="re-create it with `c2f-edge export`") from e
    return model


def _check_against_manifest(path: Path) -> None:
    """The ONNX file (and its weights sidecar) against the hashes `c2f-edge export` recorded beside it;
    an ONNX file from elsewhere has no manifest, so nothing to check against."""
    m = manifest_or_empty(path.parent)
    if m.get("kind") in ("onnx", "onnx-raw"):
        check_files(path.parent, m)


def graph_signature(model) -> str:
    """Hash of an ONNX graph's structure (ops, attributes, initializer shapes), ignoring weight values.

    Tuning records depend on the graph, not the weights, so this is the model identity for them.
    """
    h = hashlib.sha256()
    g = model.graph
    for node in g.node:
        h.update(node.op_type.encode())
        for a in node.attribute:
            h.update(a.SerializeToString())
    for init in sorted(g.initializer, key=lambda t: t.name):
        h.update(str((init.data_type, tuple(init.dims))).encode())
    for v in list(g.input) + list(g.output):
        h.update(v.type.SerializeToString())
    return h.hexdigest()


def static_input_shape(model, input_name: str = INPUT_NAME) -> list[int]:
    for v in model.graph.input:
        if v.name == input_name:
            # a symbolic batch becomes 1: edge inference is batch 1
            return [d.dim_value if d.HasField("dim_value") else 1 for d in v.type.tensor_type.shape.dim]
    raise ArtifactError(f"the ONNX model has no input named {input_name!r}",
                        hint="export it with `c2f-edge export`, which names the input `input`")


def ort_session(model, threads: int | None = None):
    """An ONNX Runtime CPU session on a path, bytes or a loaded ModelProto; ArtifactError if ORT refuses it."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    source = model.SerializeToString() if hasattr(model, "SerializeToString") else str(model)
    try:
        return ort.InferenceSession(source, so, providers=["CPUExecutionProvider"])
    except Exception as e:
        where = model if isinstance(model, (str, os.PathLike)) else "the ONNX model"
        raise ArtifactError(f"ONNX Runtime cannot load {where}: {first_line(e)}",
                            hint="re-create it with `c2f-edge export`") from e


def run_ort(session, x: np.ndarray, outputs: list[str] | None = None):
    """The session's first output (or `outputs`) for a batch, one image per call (the graph has batch 1)."""
    name = session.get_inputs()[0].name
    x = np.ascontiguousarray(x, np.float32)
    if outputs is not None:
        return session.run(outputs, {name: x})
    return np.concatenate([session.run(None, {name: x[i:i + 1]})[0] for i in range(len(x))])


def count_macs(model) -> int:
    """Multiply-accumulates of one inference in Conv, MatMul and Gemm nodes (the model's
    arithmetic; elementwise ops are left out), from ONNX shape inference."""
    import onnx

    inferred = onnx.shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    shapes.update({t.name: list(t.dims) for t in inferred.graph.initializer})
    macs = 0
    for node in inferred.graph.node:
        out = shapes.get(node.output[0])
        if not out or not all(out):
            continue
        if node.op_type == "Conv":
            w = shapes[node.input[1]]  # (C_out, C_in / group, kH, kW)
            macs += int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("MatMul", "Gemm"):
            a = shapes[node.input[0]]
            k = a[0] if node.op_type == "Gemm" and any(at.name == "transA" and at.i for at in node.attribute) else a[-1]
            macs += int(np.prod(out)) * k
    return macs
