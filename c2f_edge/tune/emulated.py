"""Tuning for an ARM core without the board: MetaSchedule's candidates are scored by their estimated time on
an emulated core (board/kernel_count.py counts them under qemu, board/cycle_model.py turns the counts into
cycles). Deterministic, unlike a board's timings, and blind where the model is (caches, memory bandwidth,
latency): the log records that its costs are estimates, and from which model and core.

A round's candidates are counted in one qemu run, so qemu and the guest's TVM start once per round.
"""

from __future__ import annotations

from pathlib import Path

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.runner import PyRunner, PyRunnerFuture, RunnerFuture, RunnerResult

from c2f_edge.board import cycle_model
from c2f_edge.core.errors import ToolchainError


def cost_note(cpu: str) -> str:
    model = cycle_model.CORES.get(cpu)
    if model is None:
        return f"instructions counted on an emulated {cpu} (no cycle model for it), 1 ns each: a count, not a time"
    return (f"ESTIMATED seconds, not measured: cycles of the {cpu} cycle model (board/cycle_model.py) at "
            f"{model.clock_ghz:g} GHz ({model.board}), one thread, counted under qemu")


def seconds(count, cpu: str) -> float:
    model = cycle_model.CORES.get(cpu)
    return count.cycles / (model.clock_ghz * 1e9) if model else count.instructions * 1e-9


@derived_object
class EmulatedRunner(PyRunner):
    """Scores every candidate of a round by its estimated seconds on the emulated `cpu`."""

    def __init__(self, cpu: str, work_dir: str | Path, timeout: float = 600):
        super().__init__()
        self.cpu, self.work, self.timeout = cpu, Path(work_dir), timeout
        self.batches = 0

    def run(self, runner_inputs) -> list[RunnerFuture]:
        from c2f_edge.board.kernel_count import KernelCount, count_kernels

        jobs = [{"path": inp.artifact_path, "args": [a.as_json() for a in inp.args_info]} for inp in runner_inputs]
        try:
            counts = count_kernels(jobs, self.cpu, self.work / "round", self.timeout)
        except ToolchainError as e:
            counts = [KernelCount(None, None, None, f"{e} ({e.hint})")] * len(jobs)
        self.batches += 1
        return [_Done(RunnerResult(None, c.error) if c.error else RunnerResult([seconds(c, self.cpu)], None))
                for c in counts]


@derived_object
class _Done(PyRunnerFuture):
    def __init__(self, result: RunnerResult):
        super().__init__()
        self.value = result

    def done(self) -> bool:
        return True

    def result(self) -> RunnerResult:
        return self.value
