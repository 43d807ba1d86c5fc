"""Tuning on a farm: every board under the key measures at once, and a board that drops costs nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from c2f_edge.board import rpc
from c2f_edge.core.errors import RemoteError
from c2f_edge.tune import farm
from tests.fixtures.boards import stop_in_session
from tests.fixtures.tuning import measured, tuning_records


def _failed(records) -> int:
    return len(records) - measured(records)


def _spans(server: rpc.Service) -> list[tuple[float, float]]:
    """(start, end) in seconds of each session the board served, from its own log."""
    from datetime import datetime

    spans, start = [], None
    for line in Path(server.log_path).read_text(errors="replace").splitlines():
        if "start serving" in line or "finish serving" in line:
            t = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S.%f").timestamp()
            if "start serving" in line:
                start = t
            elif start is not None:
                spans.append((start, t))
                start = None
    return spans


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def test_board_failures_are_told_from_kernel_failures():
    assert farm.is_board_failure("RPCRunner: An exception occurred\nTVMError: Socket recv: connection reset by peer")
    assert farm.is_board_failure("RemoteError: device 'farm' at tracker 127.0.0.1:9190 stayed busy for 120s")
    assert farm.is_board_failure("RPCRunner: Timeout, killed after 120 seconds")
    assert not farm.is_board_failure("RPCRunner: An exception occurred\nCheck failed: (ptr != nullptr) is false")
    assert not farm.is_board_failure(None)


def test_an_unexplained_failure_is_the_boards_when_a_board_left_meanwhile(monkeypatch):
    monkeypatch.setattr(farm, "DROP_GRACE_S", 0.0)
    boards = [{"a:1", "b:1", "c:1"}]
    watch = farm.BoardWatch(lambda: boards[0])
    kernel_error = "RPCRunner: An exception occurred\nCheck failed: (ptr != nullptr) is false"
    assert not watch.board_failed(kernel_error)  # all three still there: the kernel failed
    boards[0] = {"a:1", "c:1"}
    assert watch.board_failed(kernel_error)  # b:1 left: its candidate is measured again
    assert not watch.board_failed(kernel_error)  # ... once: the next failure is a kernel's again
    boards[0] = {"a:1", "c:1", "d:1"}  # a board that joins is known from then on
    assert not watch.board_failed(kernel_error) and watch.known == {"a:1", "c:1", "d:1"}


def test_a_board_that_drops_mid_tune_costs_no_record(tiny_onnx, tmp_path, rpc_tracker, capsys):
    """Three boards under one key, each timed run 0.7 s longer; board 1 is killed while it measures. The
    other two finish the budget, its in-flight candidate is measured again, and no failed record is left.
    Before and after the drop the boards measure at the same time (their own logs say when), in rounds
    rounded up to a multiple of the boards, and the log's meta names the three that measured."""
    from c2f_edge.tune import TuneConfig, tune

    key, work = "farm-drop", tmp_path / "log"
    boards = [rpc.start_host_server(tracker=rpc_tracker, key=key, delay_s=0.7) for _ in range(3)]
    # After its first session (the default schedule or an early candidate), 0.5 s into its next one: a
    # 2-3 s measurement has just begun.
    killed = stop_in_session(boards[1], 2)
    try:
        log = tune(TuneConfig(target="host", trials=12, onnx=str(tiny_onnx), work_dir=str(work), trials_per_round=4,
                              rpc_tracker=rpc_tracker.address, rpc_key=key, max_tasks=1))
    finally:
        for b in boards:
            b.stop()
    assert killed.is_set(), "the board was never killed: the test did not test anything"
    records = tuning_records(work)
    assert len(records) == log.n_records == 12 and _failed(records) == 0
    assert "6 candidates per round instead of 4: a multiple of the 3 boards" in capsys.readouterr().err
    spans = {b.address: _spans(b) for b in boards}
    assert all(spans.values()), spans  # every board measured
    assert _most_at_once([s for board in spans.values() for s in board]) >= 2, spans  # one at a time: 1
    m = log.meta["machine"]
    assert m["boards"] == 3 and m["boards_measuring_at_once"] == 3 and m["remeasured_after_board_drop"] >= 1, m
    assert m["boards_used"] == sorted(b.address for b in boards)


def test_boards_n_measures_on_at_most_n_at_once_across_hosts(tiny_onnx, tmp_path, other_hosts, capsys):
    """--boards 2 on a farm of three, on two hosts (network namespaces: the tracker hands out boards on
    distinct addresses): two boards measure at the same time and never three, and 3 candidates per round
    become 4, a multiple of the 2."""
    from c2f_edge.tune import TuneConfig, tune

    (one, two), tracker = other_hosts
    key, work = "farm-cap", tmp_path / "log"
    boards = [rpc.start_host_server(tracker=tracker, key=key, host=h.address, netns=h.netns, delay_s=0.7)
              for h in (one, one, two)]
    try:
        log = tune(TuneConfig(target="host", trials=8, onnx=str(tiny_onnx), work_dir=str(work), trials_per_round=3,
                              rpc_tracker=tracker.address, rpc_key=key, boards=2, max_tasks=1))
    finally:
        for b in boards:
            b.stop()
    assert "4 candidates per round instead of 3: a multiple of the 2 boards" in capsys.readouterr().err
    records = tuning_records(work)
    assert len(records) == log.n_records == 8 and _failed(records) == 0
    spans = [s for b in boards for s in _spans(b)]
    assert _most_at_once(spans) == 2, spans  # 3 without the cap, 1 if the boards took turns
    m = log.meta["machine"]
    assert m["boards_measuring_at_once"] == 2 and set(m["boards_used"]) <= {b.address for b in boards}, m
    assert {a.rpartition(":")[0] for a in m["boards_used"]} == {one.address, two.address}, m


def test_when_the_last_board_is_gone_tuning_stops_and_resumes(tiny_onnx, tmp_path, rpc_tracker, capsys):
    from c2f_edge.tune import TuneConfig, tune

    key, work = "farm-gone", tmp_path / "log"
    board = rpc.start_host_server(tracker=rpc_tracker, key=key, delay_s=0.7)

    stop_in_session(board, 3)  # sessions: tune's reachability check, the default schedule, a candidate
    cfg = TuneConfig(target="host", trials=4, onnx=str(tiny_onnx), work_dir=str(work), trials_per_round=2,
                     rpc_tracker=rpc_tracker.address, rpc_key=key, max_tasks=1)
    try:
        with pytest.raises(RemoteError, match=f"every board under key '{key}' .* dropped"):
            tune(cfg)
    finally:
        board.stop()
    err = capsys.readouterr().err
    assert "interrupted: every record measured so far is saved" in err and "run the same command again to resume" in err
    kept = tuning_records(work)
    assert 1 <= len(kept) < 4 and _failed(kept) == 0  # what was measured stays, nothing bogus was added
    with rpc.host_server(tracker=rpc_tracker, key=key):  # the board is back: the same call resumes
        log = tune(cfg)
    assert log.n_records == 4 and _failed(tuning_records(work)) == 0
    assert tuning_records(work)[: len(kept)] == kept


def test_boards_caps_the_farm_and_needs_a_tracker():
    from c2f_edge.core.errors import UsageError
    from c2f_edge.tune import TuneConfig, tune

    with pytest.raises(UsageError, match="--boards N needs --rpc-tracker"):
        tune(TuneConfig(target="host", boards=2))
    with pytest.raises(UsageError, match="--boards N needs --rpc-tracker and N >= 1"):
        tune(TuneConfig(target="host", boards=0, rpc_tracker="127.0.0.1:9", rpc_key="k"))
