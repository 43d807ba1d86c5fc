"""A MetaSchedule builder that keeps one worker pool for the whole tuning run.

The stock `LocalBuilder` starts a fresh process pool for every batch, and its build function imports
`tvm.s_tir.tensor_intrin` in each new worker (about 34 s here, mostly CUDA intrinsics), so on a small
machine every candidate hits the 30 s timeout. Here the workers live as long as the builder, and the
build/export functions are plain module-level code that skips that import, so a candidate builds in
about 0.1 s. Raising the timeout would only hide the problem.

Candidates are exported as shared objects (`.so`), linked by `fcompile`: the host C++ compiler by
default, or a cross-linker for a board (backend.crosslink.Linker), so the board needs no compiler.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.builder import BuilderInput, BuilderResult, PyBuilder
from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

# Workers are recycled after this many builds: TVM's pool workers leak memory when used for ever.
MAX_USES_PER_WORKER = 256


class SharedLinker:
    """A picklable `fcompile` for `export_library`: links object files with a command such as
    `["g++"]` or `[python, "-m", "ziglang", "c++", "-target", "aarch64-linux-gnu"]`."""

    output_format = "so"

    def __init__(self, cmd: list[str] | None = None):
        self.cmd = list(cmd) if cmd else [os.environ.get("CXX") or shutil.which("g++") or "c++"]

    def __call__(self, output: str, objects, options=None) -> None:
        objects = [objects] if isinstance(objects, str) else list(objects)
        cmd = [*self.cmd, "-shared", "-fPIC", "-o", output, *(options or []), *objects]
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"linking failed: {' '.join(cmd)}\n{proc.stdout}{proc.stderr}")


def build_candidate(mod, target, fcompile=None) -> str:
    """Build one scheduled candidate and export it as a .so; returns its path. Runs in a worker."""
    import tvm
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    # Same as MetaSchedule's default_build, minus the tensor-intrinsics import: the candidates are
    # already scheduled, so nothing here looks intrinsics up.
    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    rt_mod = tvm.tirx.build(mod, target=target)
    path = os.path.join(tempfile.mkdtemp(prefix="c2f-ms-"), "candidate.so")
    rt_mod.export_library(path, fcompile=fcompile or SharedLinker())
    return path


def _warm_up() -> None:
    # Import what build_candidate needs once, at worker start, outside the per-build timeout.
    import tvm  # noqa: F401
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock  # noqa: F401


@derived_object
class PoolBuilder(PyBuilder):
    """A PyBuilder backed by one persistent PopenPoolExecutor. Call `shutdown()` when done."""

    def __init__(self, max_workers: int | None = None, timeout_sec: float = 60.0,
                 fcompile=None) -> None:
        super().__init__()
        self.max_workers = max_workers or max(1, os.cpu_count() or 1)
        self.timeout_sec = timeout_sec
        self.fcompile = fcompile  # must pickle: it is sent to the workers with each candidate
        self.n_built = 0
        self.n_failed = 0
        self._pool = PopenPoolExecutor(max_workers=self.max_workers, timeout=timeout_sec,
                                       initializer=_warm_up, maximum_process_uses=MAX_USES_PER_WORKER)

    def build(self, build_inputs: list[BuilderInput]) -> list[BuilderResult]:
        fcompile = self.fcompile
        results = []
        for r in self._pool.map_with_error_catching(
                lambda x: build_candidate(x[0], x[1], fcompile),
                [(b.mod, b.target) for b in build_inputs]):
            if r.status == StatusKind.COMPLETE:
                self.n_built += 1
                results.append(BuilderResult(r.value, None))
            else:
                self.n_failed += 1
                why = (f"timeout after {self.timeout_sec} s" if r.status == StatusKind.TIMEOUT
                       else f"{type(r.value).__name__}: {r.value}")
                results.append(BuilderResult(None, f"PoolBuilder: {why}"))
        return results

    def shutdown(self) -> None:
        # After Ctrl-C a pool thread may still be blocked reading a busy worker's pipe, and closing that
        # pipe would wait for the read: end the worker processes first, then the pool.
        for worker in list(getattr(self._pool, "_worker_map", {}).values()):
            proc = getattr(worker, "_proc", None)
            if proc is not None and proc.poll() is None:
                proc.kill()
        self._pool.shutdown(wait=True)
