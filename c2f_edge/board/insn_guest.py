"""Runs inside the emulated aarch64 Python (stdlib, numpy and TVM's runtime only): one TVM bundle inference,
counted between the instruction-count plugin's markers (board/insn_count.py), after a warm-up inference.

    insn_guest.py MODEL.SO INPUT.npy OUTPUT.npy MAPS.txt START STOP
MAPS.txt gets the guest's /proc/self/maps, so that counted blocks can be attributed to the bundle's kernels.
"""

import os
import sys


def marker(magic: int) -> None:
    try:
        os.getpgid(magic)  # no such process: the plugin sees the syscall, the guest an ESRCH
    except ProcessLookupError:
        pass


def main(so, inp, out, maps, start, stop):
    import numpy as np
    import tvm
    from tvm.runtime.vm import VirtualMachine

    vm = VirtualMachine(tvm.runtime.load_module(so), tvm.cpu())
    x = tvm.runtime.tensor(np.load(inp), tvm.cpu())
    vm["main"](x)  # warm-up: first-call work (allocation, lazy init) is not the model's
    marker(start)
    y = vm["main"](x)
    marker(stop)
    np.save(out, y.numpy())
    with open("/proc/self/maps") as f, open(maps, "w") as g:
        g.write(f.read())


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], a[2], a[3], int(a[4], 0), int(a[5], 0))
