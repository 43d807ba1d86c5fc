"""The README.txt that goes with a bundle to the board."""

from __future__ import annotations

from c2f_edge.compile.bundle import LIBRARY

WEIGHTS_NOTE = ("The weights are compiled into model.so (one file to copy, no weights/graph mismatch possible, "
                "and TVM folds weight-only computations at build time). New weights mean a new compile; "
                "a tuning log still applies because it is keyed on the graph, not the weight values.")


def bundle_readme(spec, m: dict) -> str:
    """README.txt of a bundle: how to run it on the board with only the TVM runtime."""
    gpu = m["runtime"]["device"] != "cpu"
    dev = "tvm.opencl()" if gpu else "tvm.cpu()"
    shape = m["input"]["shape"]
    norm = m["input"]["normalization"]
    if spec.linker == "ndk":
        install = ("Android: load model.so with TVM's Android runtime (tvm4j / the C++ runtime built with the "
                   "NDK); the Python lines below show the calls.")
    elif (spec.triple or "").startswith("arm") and "aarch64" not in (spec.triple or ""):
        install = ("32-bit ARM: PyPI has no apache-tvm wheel for armv7; build the TVM runtime from source on the "
                   "board (cmake, runtime only), at the same TVM version.")
    else:
        install = f"pip install apache-tvm=={m['versions'].get('apache-tvm')} " \
                  f"apache-tvm-ffi=={m['versions'].get('apache-tvm-ffi')} numpy"
    return f"""\
Conv2Former TVM bundle for target `{spec.name}` ({spec.description})

Files: model.so ({m['files'][LIBRARY]['bytes'] / 1e6:.1f} MB, {m['files'][LIBRARY]['elf']}), manifest.json, README.txt

On the board (Python 3):
  {install}
  (TVM_USE_RUNTIME_LIB=1 makes `import tvm` load only the runtime: much faster on small boards)
  Threads: set TVM_NUM_THREADS to the cores to use before `import tvm`. Without it TVM uses all
  hardware threads on ARM but only half of them on x86 (one thread on a 2-vCPU machine).

  import numpy as np, tvm
  from tvm.runtime.vm import VirtualMachine
  vm = VirtualMachine(tvm.runtime.load_module("model.so"), {dev})
  x = np.zeros({tuple(shape)}, np.float32)   # your image: RGB, /255, minus mean, divided by std, NCHW
  logits = vm["main"](tvm.runtime.tensor(x, {dev})).numpy()   # shape {m['output']['shape']}
{"  The board needs an OpenCL driver (libOpenCL.so) for the GPU." if gpu else ""}
Input `{m['input']['name']}`: float32 {shape}, mean {norm['mean']}, std {norm['std']}.
Output `{m['output']['name']}`: ImageNet-1k logits (no softmax).

Weights: {WEIGHTS_NOTE}

Tuning: {m['tuning']['note']}
"""
