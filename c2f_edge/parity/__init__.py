"""Accuracy parity: every artifact (ONNX, TVM bundles local or over RPC, Core ML) against PyTorch fp32.

    backends.py   the backend registry (torch, onnxruntime, tvm-local, tvm-rpc, coreml)
    inputs.py     photos / --images / random / stress input sets
    metrics.py    logit metrics and the per-precision tolerances (defaults in one table)
    localize.py   module boundaries and where divergence starts; onnx_probe.py cuts ONNX graphs there
    harness.py    the run; report.py JSON + Markdown; api.py the one call the CLI makes
    verify.py     the post-build check behind `c2f-edge compile --verify emulated|rpc://...`
"""
