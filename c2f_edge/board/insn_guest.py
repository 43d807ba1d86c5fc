"""Runs inside the emulated aarch64 Python (stdlib, numpy, TVM's runtime and ONNX Runtime only): one
inference, counted between the instruction-count plugin's markers (board/insn_count.py), after a warm-up.

    insn_guest.py tvm|onnxruntime MODEL INPUT.npy OUTPUT.npy MAPS.txt START STOP
MODEL is a bundle's model.so or an ONNX file. MAPS.txt gets the guest's /proc/self/maps, so that counted
blocks can be attributed to the functions of the library that ran them.
"""

import os
import sys


def marker(magic: int) -> None:
    try:
        os.getpgid(magic)  # no such process: the plugin sees the syscall, the guest an ESRCH
    except ProcessLookupError:
        pass


def tvm_runner(model):
    import tvm
    from tvm.runtime.vm import VirtualMachine

    vm = VirtualMachine(tvm.runtime.load_module(model), tvm.cpu())
    return lambda x: vm["main"](tvm.runtime.tensor(x, tvm.cpu())).numpy()


def onnxruntime_runner(model):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = 1, 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return lambda x: session.run(None, {name: x})[0]


def main(runtime, model, inp, out, maps, start, stop):
    import numpy as np

    run = {"tvm": tvm_runner, "onnxruntime": onnxruntime_runner}[runtime](model)
    x = np.load(inp)
    run(x)  # warm-up: first-call work (allocation, lazy init) is not the model's
    marker(start)
    y = run(x)
    marker(stop)
    np.save(out, y)
    with open("/proc/self/maps") as f, open(maps, "w") as g:
        g.write(f.read())


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], a[2], a[3], a[4], int(a[5], 0), int(a[6], 0))
