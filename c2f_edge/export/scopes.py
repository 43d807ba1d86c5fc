"""ONNX graphs cut at module boundaries: which tensor holds each torch module's output, and a copy of
the model with those tensors as extra outputs (run by ONNX Runtime, or compiled by TVM into a debug build).

Module scopes come from the dynamo exporter's node metadata (`pkg.torch.onnx.name_scopes`). onnxsim drops
node metadata but keeps tensor names, so for a simplified model the scopes are read from a raw export:
`scopes.json` or `raw/model.onnx` beside the model if the export left them, else a raw export of the same
architecture (default weights: names do not depend on weights), cached under ~/.cache/c2f-edge/parity/.
"""

from __future__ import annotations

import ast
import json
import os
import tempfile
from pathlib import Path

from c2f_edge.core.cache import cache_dir
from c2f_edge.core.errors import ArtifactError, UnsupportedError
from c2f_edge.export.trace import trace_to_onnx

SCOPES_KEY = "pkg.torch.onnx.name_scopes"
SCOPES_FILE = "scopes.json"


def node_scopes(model) -> dict[str, list[str]]:
    """Output tensor name -> module scopes, from the dynamo exporter's node metadata (may be empty)."""
    out = {}
    for node in model.graph.node:
        meta = {p.key: p.value for p in node.metadata_props}
        if SCOPES_KEY not in meta:
            continue
        try:
            scopes = [s for s in ast.literal_eval(meta[SCOPES_KEY]) if s]
        except (ValueError, SyntaxError):
            continue
        for t in node.output:
            out[t] = scopes
    return out


def scope_order(model) -> list[tuple[str, list[str]]]:
    """(output tensor, scopes) of every node with scope metadata, in graph (topological) order."""
    scopes = node_scopes(model)
    return [(t, scopes[t]) for node in model.graph.node for t in node.output if t in scopes]


def boundary_tensors(ordered_scopes: list[tuple[str, list[str]]], names: list[str],
                     available: set[str] | None = None) -> dict[str, str]:
    """Boundary -> tensor holding its output: the last tensor produced inside that module's scope.

    `available`: tensor names present in the graph being probed (onnxsim may have folded some away);
    then the last *surviving* tensor inside the scope is used.
    """
    last: dict[str, str] = {}
    wanted = set(names)
    for tensor, scopes in ordered_scopes:
        if available is not None and tensor not in available:
            continue
        for s in scopes:
            if s in wanted:
                last[s] = tensor
    return {n: last[n] for n in names if n in last}


def probe_tensors(model, ordered_scopes: list[tuple[str, list[str]]], names: list[str]) -> dict[str, str]:
    """Boundary -> tensor name in `model` (raw or simplified ONNX), using scopes from the raw export.

    Whole modules: the last surviving tensor inside the module's scope. Branches (`.attn`, `.mlp`): the
    non-residual operand of the block's residual Add after them (see the module docstring).
    """
    whole = [n for n in names if not n.endswith((".attn", ".mlp"))]
    found = boundary_tensors(ordered_scopes, whole, graph_tensors(model))
    producer = {t: node for node in model.graph.node for t in node.output}
    for i, name in enumerate(whole):
        if not (name.startswith("stages.") and name.count(".") == 2) or name not in found:
            continue
        prev = next((found[p] for p in reversed(whole[:i]) if p in found), None)
        branches = _residual_operands(producer, prev, found[name])
        if branches:
            for suffix, tensor in zip((".attn", ".mlp"), branches):
                if name + suffix in names:
                    found[name + suffix] = tensor
    return {n: found[n] for n in names if n in found}


def _residual_operands(producer: dict, block_in: str | None, block_out: str) -> tuple[str, str] | None:
    """For out = (in + a) + m, return (a, m); None if the graph is not shaped like that."""
    out_node = producer.get(block_out)
    if block_in is None or out_node is None or out_node.op_type != "Add":
        return None
    for mid, m in (tuple(out_node.input), tuple(out_node.input)[::-1]):
        mid_node = producer.get(mid)
        if mid_node is not None and mid_node.op_type == "Add" and block_in in mid_node.input:
            a = [t for t in mid_node.input if t != block_in]
            return (a[0], m) if len(a) == 1 else None
    return None


def save_scopes(model, path: str | os.PathLike) -> None:
    Path(path).write_text(json.dumps(scope_order(model)))


def load_scopes(path: str | os.PathLike) -> list[tuple[str, list[str]]]:
    return [tuple(x) for x in json.loads(Path(path).read_text())]


def graph_tensors(model) -> set[str]:
    return {t for n in model.graph.node for t in n.output} | {i.name for i in model.graph.input}


def with_outputs(model, tensors: list[str], infer_shapes: bool = False):
    """A copy of an ONNX model with extra float32 graph outputs (after the original ones).

    infer_shapes: give the new outputs their static shapes (TVM's importer wants them)."""
    import onnx
    from onnx import TensorProto, helper

    probed = onnx.ModelProto()
    probed.CopyFrom(model)
    shapes = {}
    if infer_shapes:
        inferred = onnx.shape_inference.infer_shapes(model)
        for v in inferred.graph.value_info:
            dims = [d.dim_value if d.HasField("dim_value") else None for d in v.type.tensor_type.shape.dim]
            shapes[v.name] = dims
    have = {o.name for o in probed.graph.output}
    missing = [t for t in tensors if t not in graph_tensors(model)]
    if missing:
        raise ArtifactError(f"ONNX graph has no tensor {missing[0]!r}", hint="the scope map is for another graph")
    for t in tensors:
        if t not in have:
            probed.graph.output.append(helper.make_tensor_value_info(t, TensorProto.FLOAT, shapes.get(t)))
            have.add(t)
    return probed


def scopes_cache_path(variant: str, opset: int) -> Path:
    import torch

    return cache_dir("parity") / f"scopes-{variant}-opset{opset}-torch{torch.__version__}.json"


def remember_scopes(raw, variant: str, opset: int) -> list[tuple[str, list[str]]]:
    """Cache the scopes of a raw export of `variant` (they depend on the architecture only)."""
    order = scope_order(raw)
    path = scopes_cache_path(variant, opset)
    if order and not path.is_file():
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(order))
        os.replace(tmp, path)
    return order


def _opset(model) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 20)


def architecture_scopes(variant: str, opset: int) -> list[tuple[str, list[str]]]:
    """Scopes of a raw dynamo export of the variant's architecture (~1 min once, then cached)."""
    import onnx
    import torch

    from c2f_edge.models import create_model

    cached = scopes_cache_path(variant, opset)
    if cached.is_file():
        return load_scopes(cached)
    with tempfile.TemporaryDirectory(prefix="c2f-parity-") as d:
        trace_to_onnx(create_model(variant), Path(d) / "model.onnx", opset, what="raw ONNX export")
        order = remember_scopes(onnx.load(str(Path(d) / "model.onnx"), load_external_data=False), variant, opset)
    if not order:
        raise UnsupportedError(f"torch {torch.__version__}'s ONNX exporter recorded no module scopes",
                               hint="localization needs the dynamo exporter's name_scopes metadata")
    return order


def scopes_for(model, path: str | os.PathLike | None = None) -> list[tuple[str, list[str]]]:
    """Module scopes for `model` (loaded from `path`): its own metadata, a sidecar, or the architecture's."""
    order = scope_order(model)
    if order:
        return order
    variant = "n"
    if path is not None:
        d = Path(path).parent
        if (d / SCOPES_FILE).is_file():
            return load_scopes(d / SCOPES_FILE)
        if (d / "raw" / "model.onnx").is_file():
            import onnx

            return scope_order(onnx.load(str(d / "raw" / "model.onnx"), load_external_data=False))
        try:
            variant = json.loads((d / "manifest.json").read_text()).get("variant") or "n"
        except (OSError, ValueError):
            pass
    return architecture_scopes(variant, _opset(model))


def boundary_tensors_for(model, path, boundaries: list[str]) -> dict[str, str]:
    """Boundary -> tensor of `model`; raises UnsupportedError if none can be found."""
    found = probe_tensors(model, scopes_for(model, path), boundaries)
    if not found:
        raise UnsupportedError("no module boundary could be found in this ONNX graph",
                               hint="localization needs a graph exported by `c2f-edge export` (dynamo exporter)")
    return found
