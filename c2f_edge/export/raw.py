"""The raw (pre-onnxsim) ONNX export, for the `onnxruntime[raw]` backend and for module scopes.

`c2f-edge export` deletes its raw export after simplifying; this re-creates one with the same exporter
settings, so a bug in onnxsim (or in the exporter) shows up as a difference between the two backends.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import warnings
from pathlib import Path

from c2f_edge.core.artifacts import MANIFEST, atomic_dir, input_spec, new_manifest, sha256_file, write_json
from c2f_edge.core.errors import ExportError

RAW_KIND = "onnx-raw"


def trace_raw(model, path: str | os.PathLike, opset: int = 20, size: int = 224, load_weights: bool = True):
    """torch.onnx.export (dynamo) to `path` (+ .data sidecar); returns the loaded ModelProto."""
    import onnx
    import torch

    from c2f_edge.export.stage import INPUT_NAME, OUTPUT_NAME

    x = torch.zeros(1, 3, size, size)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], external_data=True,
                              verbose=False)
        except Exception as e:
            raise ExportError(f"raw ONNX export failed: {str(e).splitlines()[0][:200]}",
                              hint="run with -v for the traceback") from e
    return onnx.load(str(path), load_external_data=load_weights)


def export_raw(model, source, out: str | os.PathLike, variant: str = "n", opset: int = 20) -> Path:
    """Write OUT/model.onnx (+ model.onnx.data) unsimplified, with a manifest of kind `onnx-raw`."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        path = tmp / "model.onnx"
        raw = trace_raw(model, path, opset=opset, load_weights=False)
        _seed_scopes_cache(raw, variant, opset)
        files = {p.name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in sorted(tmp.iterdir())}
        write_json(tmp / MANIFEST, new_manifest(
            RAW_KIND, variant=variant, weights=source.to_dict(), input=input_spec([1, 3, 224, 224]),
            opset=opset, nodes=len(raw.graph.node), files=files,
            note="unsimplified dynamo export (node metadata kept), for parity checks of the simplifier"))
    return out / "model.onnx"


def _seed_scopes_cache(raw, variant: str, opset: int) -> None:
    """Module scopes depend on the architecture only: keep them, so localization needs no second export."""
    import json

    from c2f_edge.export import scopes

    order = scopes.scope_order(raw)
    path = scopes.scopes_cache_path(variant, opset)
    if order and not path.is_file():
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(order))
        os.replace(tmp, path)
