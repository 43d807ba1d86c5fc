"""The search loop's parts: a task scheduler that saves every round as it finishes, and the progress bar."""

from __future__ import annotations

import math


def make_scheduler(best: dict[int, float], improved: dict[int, int]):
    """A task scheduler that saves results as soon as they are measured.

    MetaSchedule's gradient scheduler joins (and so writes to the database) nothing until it has sent
    every task to the runner once: for 52 tasks that is ~800 trials that a Ctrl-C would lose. This
    one joins every finished task before each pick. Policy: one round per task in list order (so a
    resume fills the least-tuned tasks first), then the task that costs the most end to end
    (weight x best latency), discounted by how many of its rounds in a row brought no improvement.
    `best`/`improved` are filled in by the progress callback (task id -> best ms / stale rounds).
    """
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.task_scheduler import PyTaskScheduler

    @derived_object
    class FlushingScheduler(PyTaskScheduler):
        def __init__(self):
            super().__init__()
            self.first_pass = 0

        def next_task_id(self) -> int:
            outer = self._outer()  # pylint: disable=no-member
            tasks = outer.tasks_
            for i in range(len(tasks)):
                outer.touch_task(i)  # joins a task whose measurements are all done
            live = [i for i, t in enumerate(tasks) if not t.is_terminated]
            if not live:
                return -1
            while self.first_pass < len(tasks):
                i = self.first_pass
                self.first_pass += 1
                if not tasks[i].is_terminated:
                    return i
            for i in live:  # a task cannot be searched again while its last round is still running
                if tasks[i].runner_futures is not None:
                    outer.join_running_task(i)

            def score(i):
                b = best.get(i, math.inf)
                if math.isinf(b):
                    return 0.0
                return float(tasks[i].task_weight) * b * 0.5 ** improved.get(i, 0)

            return max(live, key=score)

    return FlushingScheduler()


def make_progress(n_tasks: int, budget: int, on_round, best: dict[int, float], stale: dict[int, int],
                  unit: str = "ms"):
    """`unit`: how the bar names the costs ("est. ms" when they are a model's estimates)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.measure_callback import PyMeasureCallback

    from c2f_edge.core.progress import bar

    @derived_object
    class Progress(PyMeasureCallback):
        """One tqdm bar: trials measured, tasks touched, failures, best latency of the current task."""

        def __init__(self):
            super().__init__()
            self.trials = 0
            self.failed = 0
            self.best = best
            self.bar = bar(total=budget, unit="trial", desc="tuning")

        def apply(self, task_scheduler, task_id, measure_candidates, builder_results, runner_results):
            n = len(measure_candidates)
            before = self.best.get(task_id, math.inf)
            for b, r in zip(builder_results, runner_results):
                if b.error_msg or r.error_msg or not r.run_secs:
                    self.failed += 1
                    continue
                ms_ = 1e3 * sum(float(s) for s in r.run_secs) / len(r.run_secs)
                self.best[task_id] = min(self.best.get(task_id, math.inf), ms_)
            # "improved" = at least 1% faster than before this round
            stale[task_id] = 0 if self.best.get(task_id, math.inf) < 0.99 * before else stale.get(task_id, 0) + 1
            self.trials += n
            self.bar.update(n)
            total_best = sum(self.best.values())
            self.bar.set_postfix_str(f"tasks {len(self.best)}/{n_tasks}, task {task_id} best "
                                     f"{self.best.get(task_id, math.nan):.3f} {unit}, sum of bests "
                                     f"{total_best:.1f} {unit}, failed {self.failed}")
            on_round(self.trials)

        def close(self):
            self.bar.close()

    return Progress()
