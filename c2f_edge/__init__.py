"""c2f-edge: Conv2Former to edge devices (ONNX, TVM, Core ML), with parity and latency reports."""

__version__ = "0.1.0"
