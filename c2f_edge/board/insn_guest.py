"""Runs inside the emulated aarch64 Python (stdlib, numpy, TVM's runtime, ONNX Runtime and ncnn only): one
inference, counted between the instruction-count plugin's markers (board/insn_count.py), after a warm-up.

    insn_guest.py tvm|onnxruntime|ncnn|ncnn_fp32 MODEL INPUT.npy OUTPUT.npy MAPS.txt START STOP
MODEL is a bundle's model.so, an ONNX file, or the path of an ncnn model without .param/.bin. MAPS.txt gets the guest's /proc/self/maps, so that counted
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


def ncnn_runner(model, fp32=False):
    """ncnn with its default options (fp16 storage and arithmetic where the core has them), or all fp32."""
    import ncnn
    import numpy as np

    net = ncnn.Net()
    net.opt.num_threads = 1
    if fp32:
        for name in dir(net.opt):
            if name.startswith("use_") and any(k in name for k in ("fp16", "bf16", "int8")):
                setattr(net.opt, name, False)
    net.load_param(model + ".param")
    net.load_model(model + ".bin")

    def run(x):
        ex = net.create_extractor()
        ex.input("in0", ncnn.Mat(np.ascontiguousarray(x[0])))
        _, y = ex.extract("out0")
        return np.array(y).reshape(1, -1)

    return run


def main(runtime, model, inp, out, maps, start, stop):
    import numpy as np

    runners = {"tvm": tvm_runner, "onnxruntime": onnxruntime_runner, "ncnn": ncnn_runner,
               "ncnn_fp32": lambda m: ncnn_runner(m, fp32=True)}
    run = runners[runtime](model)
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
