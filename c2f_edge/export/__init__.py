"""Stage 1, export: a checkpoint (or synthetic weights) -> a simplified, checked ONNX file + manifest.

    stage.py    export_onnx(ExportConfig(...)): trace, simplify, check ORT against torch, write
    trace.py    torch -> ONNX with the dynamo exporter (shared with the raw export)
    raw.py      the unsimplified export, for the `onnxruntime[raw]` parity backend
    scopes.py   which ONNX tensor holds each torch module's output (parity localizes divergence with it)
"""

from c2f_edge.export.stage import DEFAULT_ONNX, ExportConfig, ensure_onnx, export_onnx

__all__ = ["DEFAULT_ONNX", "ExportConfig", "ensure_onnx", "export_onnx"]
