"""Core ML export for iOS: torch -> ML Program (.mlpackage), compression, and a Linux-side check.

- `convert.build_package(CoreMLConfig(...))`: the `c2f-edge coreml` pipeline, writes DIR/model.mlpackage.
- `check.run_package(path, x, mode)`: evaluates a saved package (NumPy MIL interpreter on Linux,
  `MLModel.predict` on macOS); the parity harness wraps it as the `coreml` backend.
"""
