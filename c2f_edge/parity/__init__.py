"""Accuracy parity: every artifact (ONNX, TVM bundles local or over RPC, Core ML) against PyTorch fp32.

    backends/     the backend registry, one file per runtime (torch, onnxruntime, tvm-*, coreml)
    inputs.py     photos / --images / random / stress input sets
    localize.py   module boundaries and where divergence starts (export/scopes.py cuts ONNX graphs there)
    harness.py    the run; report.py JSON + Markdown; api.py the one call the CLI makes

The metrics and the tolerance classes they are judged by are core.metrics: the export's and the
compile verifier's own checks use the same ones.
"""
