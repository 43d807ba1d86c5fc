"""Measuring on a farm: every board registered under one tracker key at once, surviving a board that drops.

MetaSchedule's RPCRunner measures one candidate per worker, each worker asking the tracker for a free
board; with one worker per board, all boards measure at once. What it lacks:
- a bound on the wait for a board (the stock request waits for ever once the last board is gone);
- a second chance for a candidate whose board dropped: the stock runner records it as a failure, so a
  board pulled from the rack would leave failed records for good candidates.
`FarmRunner` wraps it: a candidate that failed because of the board, not its kernel, is measured again
on the boards that remain; when none remains, tuning stops like Ctrl-C, with every record kept.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from tvm.ir.utils import derived_object
from tvm.s_tir.meta_schedule.runner import PyRunner, PyRunnerFuture, RunnerFuture, RunnerResult

from c2f_edge.core.errors import RemoteError

# A candidate is measured again at most this often before its failure is recorded.
MAX_RETRIES = 3
# What the board, not the kernel, did wrong: session, socket and tracker errors, our own RemoteErrors, and
# the RPC channel closing under a call (a board killed mid-measurement: "code == RPCCode::kReturn").
BOARD_FAILURE = re.compile(r"RemoteError|RPCSessionTimeoutError|Timeout|socket|Socket|connection|Connection|"
                           r"closed|reset|Broken pipe|stayed busy|no RPC server registered|cannot reach|EOF|"
                           r"RPCCode::kReturn")
# An error that names no such cause still counts as the board's when a board left the tracker meanwhile;
# the tracker hears of a drop about when the client does, so look twice, this far apart.
DROP_GRACE_S = 1.0
BOARDS_GONE = "c2f-edge: every board under the key is gone"


class TrackerSession:
    """Picklable f_create_session: a board through the tracker, waiting at most `wait` s for a free one.
    With a journal, each session appends the board it got (HOST:PORT) and when: the runner's workers are
    other processes, and this file is how the tuning run learns which boards measured."""

    def __init__(self, tracker: str, key: str, wait: float, session_timeout: float, journal: str | None = None):
        self.tracker, self.key, self.wait, self.session_timeout = tracker, key, wait, session_timeout
        self.journal = journal

    def __call__(self, _rpc_config):
        from c2f_edge.board import rpc

        board, sess = rpc.reserve(self.tracker, self.key, wait=self.wait, session_timeout=self.session_timeout)
        if self.journal:
            with open(self.journal, "a") as f:  # one short line per write: appends do not interleave
                f.write(json.dumps({"board": board, "t": round(time.time(), 3)}) + "\n")
        return sess


def boards_used(journal: Path) -> list[str]:
    """The boards (HOST:PORT) that opened a measuring session, from a TrackerSession journal."""
    if not journal.is_file():
        return []
    boards = set()
    for line in journal.read_text().splitlines():
        try:
            boards.add(json.loads(line)["board"])
        except (ValueError, KeyError, TypeError):
            continue  # a line cut off by a killed run
    return sorted(boards)


def count_boards(tracker: str, key: str, cap: int | None = None) -> int:
    """Boards registered under `key` (busy or free), at most `cap`. RemoteError if the tracker is away."""
    from c2f_edge.board import rpc

    n = len(rpc.boards(tracker, key))
    return min(n, cap) if cap else n


def is_board_failure(error_msg: str | None) -> bool:
    return bool(error_msg) and bool(BOARD_FAILURE.search(error_msg))


def _registered(tracker: str, key: str) -> set[str]:
    from c2f_edge.board import rpc

    try:
        return set(rpc.boards(tracker, key))
    except RemoteError:
        return set()  # the tracker itself is gone: no board can be reached


class BoardWatch:
    """The boards registered under the key, to tell a candidate that failed because of its board (to be
    measured again) from one whose kernel failed."""

    def __init__(self, registered):
        self.registered = registered  # () -> set of HOST:PORT
        self.known = registered()

    def board_failed(self, error_msg: str | None) -> bool:
        if not error_msg:
            return False
        if is_board_failure(error_msg):
            return True
        for attempt in range(2):
            now = self.registered()
            if self.known - now:
                self.known = now  # one board that left explains one failure
                return True
            if attempt == 0:
                time.sleep(DROP_GRACE_S)
        self.known |= now
        return False


@derived_object
class FarmRunner(PyRunner):
    """An RPCRunner with one worker per board, which measures a candidate again when its board dropped."""

    def __init__(self, tracker: str, key: str, boards: int, evaluator, session_timeout: float,
                 journal: str | None = None):
        from tvm.s_tir import meta_schedule as ms

        from c2f_edge.board.rpc import parse_addr

        super().__init__()
        host, port = parse_addr(tracker, "--rpc-tracker")
        config = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key=key,
                                     session_timeout_sec=session_timeout)
        self.retried = 0  # candidates measured again after their board dropped
        self.watch = BoardWatch(lambda: _registered(tracker, key))
        self.inner = ms.runner.RPCRunner(config, evaluator, max_workers=boards,
                                         f_create_session=TrackerSession(tracker, key, session_timeout,
                                                                         session_timeout, journal))

    def run(self, runner_inputs) -> list[RunnerFuture]:
        return [_RetryingFuture(self, inp, fut) for inp, fut in zip(runner_inputs, self.inner.run(runner_inputs))]


@derived_object
class _RetryingFuture(PyRunnerFuture):
    def __init__(self, runner: FarmRunner, runner_input, future):
        super().__init__()
        self.runner, self.input, self.future = runner, runner_input, future

    def done(self) -> bool:
        return self.future.done()

    def result(self) -> RunnerResult:
        for attempt in range(MAX_RETRIES + 1):
            res = self.future.result()
            if attempt == MAX_RETRIES or not self.runner.watch.board_failed(res.error_msg):
                return res
            if not self.runner.watch.registered():
                # Raised inside MetaSchedule's C++ loop, so it reaches tune() as text: tune() looks for it.
                raise RuntimeError(BOARDS_GONE)
            self.runner.retried += 1
            (self.future,) = self.runner.inner.run([self.input])
        return res
