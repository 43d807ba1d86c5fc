"""Runs inside the emulated aarch64 Python (stdlib, numpy and TVM's runtime only): many compiled kernels in
one run, each called once to warm up and once between the counting plugin's markers (board/kernel_count.py).

    kernel_guest.py JOBS.json RESULTS.jsonl START STOP

JOBS.json: [{"path": a kernel's .so, "args": [["TENSOR", dtype, shape], ...]}, ...]. RESULTS.jsonl gets a
line per job, in order: {"job": i, "region": the index of its counted region, or null, "error": text or null,
"maps": the guest's /proc/self/maps while the kernel was loaded}.
A job that fails closes no region, so the regions of the others keep their order.
"""

import json
import sys

from insn_guest import marker  # its neighbour: a script's own directory is on sys.path


def arguments(specs, rng):
    import numpy as np
    import tvm

    out = []
    for kind, dtype, shape in specs:
        if kind != "TENSOR":
            raise ValueError(f"argument kind {kind} is not supported")
        data = rng.standard_normal(shape).astype(dtype) if dtype.startswith("float") else np.zeros(shape, dtype)
        out.append(tvm.runtime.tensor(data, tvm.cpu()))
    return out


def main(jobs_path, results_path, start, stop):
    import numpy as np
    import tvm

    with open(jobs_path) as f:
        jobs = json.load(f)
    rng = np.random.default_rng(0)
    region = 0
    with open(results_path, "w") as out:
        for i, job in enumerate(jobs):
            result = {"job": i, "region": None, "error": None}
            counting = False
            try:
                mod = tvm.runtime.load_module(job["path"])
                func = mod[mod.entry_name]
                args = arguments(job["args"], rng)
                func(*args)  # warm-up: first-call work is not the kernel's
                marker(start)
                counting = True
                func(*args)
                marker(stop)
                counting = False
                result["region"] = region
                region += 1
                with open("/proc/self/maps") as f:  # where this kernel's library is, while it is loaded
                    result["maps"] = f.read()
            except Exception as e:  # noqa: BLE001 - a failing candidate is a result, not the end of the batch
                result["error"] = f"{type(e).__name__}: {e}"[:2000]
                if counting:  # close its region, so that the next job's is its own
                    marker(stop)
                    region += 1
            out.write(json.dumps(result) + "\n")
            out.flush()


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0], a[1], int(a[2], 0), int(a[3], 0))
