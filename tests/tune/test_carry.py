"""A tuning log of an older PIPELINE_VERSION is carried over: the unchanged kernels keep their records."""

from __future__ import annotations

import json
import shutil

import pytest

from c2f_edge.backend import tuning_db
from c2f_edge.backend.pipeline import PIPELINE_VERSION
from c2f_edge.core.errors import UsageError
from c2f_edge.tune import carry
from tests.fixtures.tuning import tuning_records


def _as_older_version(log_dir, **meta_changes):
    meta = json.loads((log_dir / "meta.json").read_text())
    meta.update({"pipeline_version": PIPELINE_VERSION - 1, **meta_changes})
    (log_dir / "meta.json").write_text(json.dumps(meta))


def _records_by_workload(log_dir) -> dict[str, list]:
    """The records (trace, run_secs) of each workload, keyed by the workload's structural hash."""
    wl = [json.loads(ln)[0] for ln in (log_dir / "database_workload.json").read_text().splitlines() if ln.strip()]
    out: dict[str, list] = {}
    for i, rec in tuning_records(log_dir):
        out.setdefault(wl[i], []).append(json.dumps(rec[:2]))
    return out


def test_a_version_bump_keeps_the_records_of_unchanged_kernels_and_tunes_the_changed_one(
        tiny_tuned, tiny_onnx, tmp_path, monkeypatch, capsys):
    """The realistic case: a bump that changed one kernel (here the conv + GELU, by one GELU coefficient)."""
    from c2f_edge.backend import targets
    from c2f_edge.backend.legalize import gelu
    from c2f_edge.tune import TuneConfig, tune

    work = tmp_path / "log"
    shutil.copytree(tiny_tuned, work)
    _as_older_version(work)
    before = _records_by_workload(work)
    assert len(before) == 5
    monkeypatch.setattr(gelu, "NUM", (gelu.NUM[0] * (1 + 1e-6), *gelu.NUM[1:]))

    n_before = sum(len(v) for v in before.values())
    log = tune(TuneConfig(target="host", trials=n_before, onnx=str(tiny_onnx), work_dir=str(work),
                          trials_per_round=4))
    after = _records_by_workload(work)
    kept = {h: after[h] for h in before if h in after}
    assert len(kept) == 4, "the four kernels without a GELU must keep their workloads"
    assert all(kept[h] == before[h] for h in kept), "a kept kernel's records changed"
    (gone,) = set(before) - set(after)
    (new,) = set(after) - set(before)
    assert after[new], "the changed kernel got no record (its default schedule is measured first)"
    report = log.meta["carried_over"][-1]
    assert report == {"from_pipeline_version": PIPELINE_VERSION - 1, "to_pipeline_version": PIPELINE_VERSION,
                      "kernels_kept": 4, "kernels_new": 1, "records_kept": n_before - len(before[gone]),
                      "records_dropped": len(before[gone])}
    assert log.meta["pipeline_version"] == PIPELINE_VERSION and log.meta["trials"] == log.n_records
    assert not (work / carry.JOURNAL).exists()
    err = capsys.readouterr().err
    assert f"carried {work} over from pipeline version {PIPELINE_VERSION - 1}" in err
    # compile takes it as a log of today's pipeline
    found, note = tuning_db.find_log("host", targets.get("host").to_json(), log.meta["graph_signature"],
                                     explicit=str(work))
    assert found is not None, note


def test_a_log_of_an_older_version_for_another_target_is_still_refused_untouched(tiny_tuned, tiny_onnx, tmp_path):
    from c2f_edge.tune import TuneConfig, tune

    work = tmp_path / "log"
    shutil.copytree(tiny_tuned, work)
    _as_older_version(work, target={"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]})
    files = {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()}
    with pytest.raises(UsageError, match="tuned for target"):
        tune(TuneConfig(target="host", trials=64, onnx=str(tiny_onnx), work_dir=str(work)))
    assert {p.name: p.read_bytes() for p in work.iterdir() if p.is_file()} == files


def _journal(work, complete: bool):
    for name, text in (("database_workload.json", "old w\n"), ("database_tuning_record.json", "old r\n"),
                       ("meta.json", "{}")):
        (work / name).write_text(text)
    j = work / carry.JOURNAL
    j.mkdir()
    (j / "database_workload.json").write_text("new w\n")
    (j / "database_tuning_record.json").write_text("new r\n")  # meta.json not written yet, or moved already
    if complete:
        (j / "complete").touch()


def test_a_move_cut_short_is_finished_and_an_unfinished_journal_dropped(tmp_path):
    done = tmp_path / "done"
    done.mkdir()
    _journal(done, complete=True)
    assert carry.finish(done)
    assert (done / "database_workload.json").read_text() == "new w\n"
    assert (done / "database_tuning_record.json").read_text() == "new r\n"
    assert not (done / carry.JOURNAL).exists()

    cut = tmp_path / "cut"
    cut.mkdir()
    _journal(cut, complete=False)
    assert not carry.finish(cut)
    assert (cut / "database_workload.json").read_text() == "old w\n"
    assert (cut / "database_tuning_record.json").read_text() == "old r\n"
    assert not (cut / carry.JOURNAL).exists()
