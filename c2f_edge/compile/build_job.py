"""The TVM build of a bundle, run in a child process: import the ONNX, compile it, link model.so.

LLVM and TVM can still end a process natively (a segfault, an abort) on input no check foresaw. In a
child, that is a failed step with a one-line error in the parent, which then removes the half-written
bundle as for any other failure. The tuner already builds its candidates in child processes.

    python -m c2f_edge.compile.build_job JOB.json   # written by run_build_job; writes JOB.json.result
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from c2f_edge.core import errors
from c2f_edge.core.errors import C2FError, ToolchainError


def run_build_job(job: dict, what: str, verbose: bool = False) -> dict:
    """Run the build in a child; returns its result ({"device_modules", "records_used", "kernels"}) or
    raises the child's C2FError, or a ToolchainError naming the crash."""
    job_path = Path(job["out"]).with_name(".build-job.json")
    job_path.write_text(json.dumps(job))
    result_path = Path(f"{job_path}.result")
    try:
        proc = subprocess.run([sys.executable, "-m", "c2f_edge.compile.build_job", str(job_path)],
                              capture_output=True, text=True, check=False)
        for line in proc.stderr.splitlines():  # the child's warnings reach the user; its noise only with -v
            if verbose or line.startswith("warning:"):
                print(line, file=sys.stderr)
        if result_path.is_file():
            result = json.loads(result_path.read_text())
            if "error" in result:
                e = result["error"]
                raise getattr(errors, e["type"], C2FError)(e["message"], hint=e["hint"])
            if proc.returncode == 0:
                return result
        if proc.returncode < 0:
            name = signal.Signals(-proc.returncode).name
            raise ToolchainError(f"TVM crashed ({name}) while {what}; nothing was written",
                                 hint="run with -v to see its output; a target field LLVM handles badly is the "
                                      "usual cause, so try another --target, and report it")
        tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1:] or [f"exit code {proc.returncode}"]
        raise ToolchainError(f"the TVM build failed while {what}: {tail[0][:200]}", hint="run with -v for its output")
    finally:
        job_path.unlink(missing_ok=True)
        result_path.unlink(missing_ok=True)


def build(job: dict) -> dict:
    """In the child: the build itself. Returns what the parent records in the manifest."""
    import contextlib

    from c2f_edge.backend import crosslink, precision, targets, tuning_db, tvm_build
    from c2f_edge.backend.pipeline import TuningApplied
    from c2f_edge.core.onnx_file import load_onnx

    spec = targets.get(job["target"])
    linker = crosslink.linker_for(spec, job.get("cross_compiler"))
    mod, params = tvm_build.import_onnx(load_onnx(job["onnx"]), job["shape"])
    applied = TuningApplied()
    records = 0
    with contextlib.ExitStack() as stack:
        log, database = job.get("tuning_log"), None
        if log:
            log_dir, records = stack.enter_context(tuning_db.readable(log))
            database = tvm_build.open_database(log_dir)
        ex = tvm_build.build(mod, params, spec.to_json(), database=database, applied=applied,
                             blocked=job.get("blocked", True), precision=precision.get(job.get("precision", "fp32")),
                             split_reduction=job.get("split_reduction", False))
    device_modules = tvm_build.imported_kinds(ex.mod)
    tvm_build.export_library(ex, job["out"], linker)
    return {"device_modules": device_modules, "records_used": records,
            "kernels": {"total": applied.kernels, "from_log": applied.from_log, "split_reduction": applied.split}}


def main(argv: list[str]) -> int:
    job_path = Path(argv[0])
    job = json.loads(job_path.read_text())
    out = Path(f"{job_path}.result")
    try:
        result = build(job)
    except C2FError as e:
        result = {"error": {"type": type(e).__name__, "message": str(e), "hint": e.hint}}
    tmp = out.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(result))
    os.replace(tmp, out)
    return 1 if "error" in result else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
