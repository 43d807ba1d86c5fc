"""The raw (pre-onnxsim) ONNX export, for the `onnxruntime[raw]` parity backend.

`c2f-edge export` deletes its raw export after simplifying; this re-creates one with the same exporter
settings, so a bug in onnxsim (or in the exporter) shows up as a difference between the two backends.
"""

from __future__ import annotations

import os
from pathlib import Path

from c2f_edge.core.artifacts import MANIFEST, atomic_dir, input_spec, new_manifest, sha256_file, write_json
from c2f_edge.export import scopes
from c2f_edge.export.trace import DEFAULT_OPSET, trace_to_onnx

RAW_KIND = "onnx-raw"


def export_raw(model, source, out: str | os.PathLike, variant: str = "n", opset: int = DEFAULT_OPSET) -> Path:
    """Write OUT/model.onnx (+ model.onnx.data) unsimplified, with a manifest of kind `onnx-raw`."""
    import onnx

    out = Path(out)
    with atomic_dir(out) as tmp:
        path = tmp / "model.onnx"
        trace_to_onnx(model, path, opset, what="raw ONNX export")
        raw = onnx.load(str(path), load_external_data=False)
        # Scopes depend on the architecture only: keep them, so localization needs no second export.
        scopes.remember_scopes(raw, variant, opset)
        files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in sorted(tmp.iterdir())}
        write_json(tmp / MANIFEST, new_manifest(
            RAW_KIND, variant=variant, weights=source.to_dict(), input=input_spec([1, 3, 224, 224]),
            opset=opset, nodes=len(raw.graph.node), files=files,
            note="unsimplified dynamo export (node metadata kept), for parity checks of the simplifier"))
    return out / "model.onnx"
