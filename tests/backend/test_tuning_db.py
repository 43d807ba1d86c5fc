import json
import warnings
from pathlib import Path

import pytest

from c2f_edge.backend import tuning_db
from c2f_edge.core.errors import ArtifactError

TARGET = {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mattr": ["+neon"]}


def make_log(path, **meta):
    path.mkdir(parents=True)
    (path / tuning_db.WORKLOAD_FILE).write_text("")
    (path / tuning_db.RECORD_FILE).write_text('{"r": 1}\n{"r": 2}\n')
    tuning_db.write_meta(path, target=TARGET, target_name="arm64", graph_signature="g1", **meta)
    return path


def test_matching_log_is_found_automatically(tmp_path):
    make_log(tmp_path / "arm64")
    log, note = tuning_db.find_log("arm64", TARGET, "g1", root=tmp_path)
    assert log is not None and log.n_records == 2 and note.startswith("tuned:")


@pytest.mark.parametrize("field,value,reason", [
    ("tvm_version", "0.20.0", "tuned with TVM 0.20.0"),
    ("target", {"kind": "llvm", "mtriple": "armv7l-linux-gnueabihf"}, "tuned for target"),
    ("graph_signature", "other", "another model graph"),
    ("pipeline_version", 0, "pipeline version 0"),
])
def test_mismatched_log_is_skipped_with_a_reason_and_explicit_one_is_an_error(tmp_path, field, value, reason):
    d = make_log(tmp_path / "arm64")
    meta = json.loads((d / tuning_db.META).read_text())
    meta[field] = value
    (d / tuning_db.META).write_text(json.dumps(meta))
    log, note = tuning_db.find_log("arm64", TARGET, "g1", root=tmp_path)
    assert log is None and "skipped" in note and reason in note
    with pytest.raises(ArtifactError, match=reason):
        tuning_db.find_log("arm64", TARGET, "g1", explicit=str(d))


def test_logs_are_per_precision_and_never_cross(tmp_path):
    """An fp16 build looks in <target>-fp16/ and refuses an fp32 log (its kernels differ); logs from
    before --precision count as fp32."""
    make_log(tmp_path / "arm64")
    log, note = tuning_db.find_log("arm64", TARGET, "g1", root=tmp_path, precision="fp16")
    assert log is None and f"no tuning log at {tmp_path / 'arm64-fp16'}" in note
    with pytest.raises(ArtifactError, match="tuned at fp32, building at fp16"):
        tuning_db.find_log("arm64", TARGET, "g1", explicit=str(tmp_path / "arm64"), precision="fp16")
    make_log(tmp_path / "arm64-fp16", precision="fp16")
    log, _ = tuning_db.find_log("arm64", TARGET, "g1", root=tmp_path, precision="fp16")
    assert log is not None and log.path == tmp_path / "arm64-fp16"
    with pytest.raises(ArtifactError, match="tuned at fp16, building at fp32"):
        tuning_db.find_log("arm64", TARGET, "g1", explicit=str(tmp_path / "arm64-fp16"))
    assert tuning_db.status(log, TARGET, "g1") == "fits"  # judged at its own precision


def test_none_builds_untuned_and_missing_log_says_where_it_looked(tmp_path):
    make_log(tmp_path / "arm64")
    assert tuning_db.find_log("arm64", TARGET, "g1", explicit="none", root=tmp_path) == (
        None, "untuned (--tuning-log none)")
    log, note = tuning_db.find_log("rpi4", TARGET, "g1", root=tmp_path)
    assert log is None and str(tmp_path / "rpi4") in note


def test_default_root_prefers_env_then_cwd_then_the_shipped_logs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(tuning_db.ENV_ROOT, raising=False)
    shipped = tuning_db.default_root()
    assert shipped.name == "tuning_logs" and shipped.is_absolute()  # the checkout's own logs
    (tmp_path / "tuning_logs").mkdir()
    assert tuning_db.default_root() == tuning_db.DEFAULT_ROOT
    monkeypatch.setenv(tuning_db.ENV_ROOT, str(tmp_path / "mine"))
    assert tuning_db.default_root() == tmp_path / "mine"


def test_not_a_log(tmp_path):
    with pytest.raises(ArtifactError, match="is not a tuning log"):
        tuning_db.read_log(tmp_path)


def test_a_machine_log_is_looked_up_under_its_cpu_and_the_note_names_the_others(tmp_path):
    """Host logs live in tuning_logs/host/<cpu>-<cores>cores/: a log from another CPU is not used."""
    make_log(tmp_path / "arm64" / "znver3-2cores")
    log, note = tuning_db.find_log("arm64", TARGET, "g1", root=tmp_path, machine="znver3-2cores")
    assert log is not None and log.path == tmp_path / "arm64" / "znver3-2cores"
    log, note = tuning_db.find_log("arm64", TARGET, "g1", root=tmp_path, machine="rocketlake-2cores")
    assert log is None
    assert str(tmp_path / "arm64" / "rocketlake-2cores") in note and "logs exist for znver3-2cores" in note
    assert tuning_db.log_dir("arm64", None, tmp_path) == tmp_path / "arm64"


class StaleLogWarning(UserWarning):
    """A shipped tuning log for another CPU no longer fits: reported, not failed (that CPU must re-tune)."""


SHIPPED = Path(__file__).resolve().parents[2] / "tuning_logs"


def check_shipped_log(path: Path, onnx: Path, signature: str) -> str:
    """'fits' or 'stale' for one committed log, judged as `compile` on the machine that tuned it would.

    A log for this machine's CPU must fit, with a record for every kernel today's pipeline builds. A log
    for another CPU may be stale: `compile` there must skip it with its note, and it is reported as a
    StaleLogWarning naming the CPU to re-tune on. A log that fits but misses kernels is an error either way.
    """
    from c2f_edge.backend import precision, targets, tvm_build
    from c2f_edge.compile.stage import split_reduction_for
    from c2f_edge.tune.tasks import extract_tasks, without_split

    log = tuning_db.read_log(path)
    prec = precision.get(log.meta.get("precision", "fp32"))  # tuning_logs/<target>-fp16/: fp16 kernels
    spec = targets.get(log.meta["target_name"])
    target = tuning_db.own_target(log, spec.target)
    state = tuning_db.status(log, spec.target, signature)
    if state != "fits":
        assert path.name != spec.machine(), (
            f"{path} is this machine's tuning log and it is {state}: re-tune it here (see the README's "
            "Tune section) and commit it")
        per_machine = spec.machine() is not None  # tuning_logs/host/<machine>/, else tuning_logs/<target>/
        found, note = tuning_db.find_log(spec.name, target, signature,
                                         root=path.parent.parent if per_machine else path.parent,
                                         machine=path.name if per_machine else None, precision=prec.name)
        why = tuning_db.mismatch(log, target, signature, precision=prec.name)
        assert found is None and note == f"untuned: skipped {path}: {why}"
        warnings.warn(StaleLogWarning(f"{path} is {state}"), stacklevel=2)
        return "stale"
    db = tvm_build.open_database(path)
    # The split reduction's kernels need no record where the target's builds take it (tune leaves them out).
    split = split_reduction_for(None, spec, target, prec.name)
    tasks = extract_tasks(onnx, target, precision=prec)
    if split:
        tasks, _ = without_split(tasks, target)
    missing = [t.task_name for t in tasks if not db.has_workload(t.dispatched[0])]
    assert not missing, f"{path}: fits by its meta.json but has no records for {missing}"
    # A measured record for every kernel (a failed measurement is stored with no time, or 1e10 s) ...
    unmeasured = [t.task_name for t in tasks if not _measured(db.query_tuning_record(t.dispatched[0], t.target,
                                                                                     t.task_name))]
    assert not unmeasured, f"{path}: no successfully measured record for {unmeasured}"
    # ... and the build takes every kernel's schedule from the log, as compile counts it.
    applied = _applied(db, onnx, target, prec, split)
    assert applied.kernels > 0 and applied.from_log + applied.split == applied.kernels, (
        f"{path}: the log scheduled {applied.from_log} of the {applied.kernels} kernels "
        f"({applied.split} split reductions)")
    return "fits"


def _measured(record) -> bool:
    return record is not None and record.run_secs is not None and len(record.run_secs) > 0 \
        and max(float(s) for s in record.run_secs) < 1e9


def _applied(db, onnx: Path, target: dict, prec, split_reduction: bool = False):
    """Kernels of the build, and how many took their schedule from `db`: the build's own passes up to
    scheduled kernels (pipeline.schedule_passes), without TVM's lowering."""
    import tvm

    from c2f_edge.backend import pipeline, tvm_build

    mod, params = tvm_build.import_onnx(onnx)
    applied = pipeline.TuningApplied()
    with tvm.target.Target(target), db:
        passes = pipeline.schedule_passes(gpu=False, database=db, applied=applied, precision=prec,
                                          split_reduction=split_reduction)
        tvm.transform.Sequential(passes)(tvm_build.bind_params(mod, params))
    return applied


@pytest.mark.slow
def test_the_shipped_logs_fit_or_are_reported_stale(onnx_artifact):
    """Every committed log (host logs per CPU, board logs such as rpi5's, tuned with --emulated) either
    applies (same TVM, target and graph, today's PIPELINE_VERSION, a record for every kernel), or is
    reported stale without failing: a change to the kernels must be landable from any machine. A log for
    this machine's CPU must fit."""
    from c2f_edge.core.onnx_file import graph_signature, load_onnx

    paths = [log.path for log in tuning_db.all_logs(SHIPPED)]
    assert any(p.parent.name == "host" for p in paths), "no shipped host log"
    signature = graph_signature(load_onnx(onnx_artifact / "model.onnx"))
    for path in paths:
        check_shipped_log(path, onnx_artifact / "model.onnx", signature)


def stale_copy(tmp_path: Path, target: dict | None = None) -> Path:
    """A copy of a shipped host log, its meta.json claiming the next PIPELINE_VERSION; with `target`, as if
    tuned for that host target (its directory named by mcpu and cores, as `compile` looks it up)."""
    import shutil

    from c2f_edge.backend.pipeline import PIPELINE_VERSION

    src = tuning_db.all_logs(SHIPPED)[0].path
    meta = json.loads((src / tuning_db.META).read_text())
    meta["pipeline_version"] = PIPELINE_VERSION + 1
    if target:
        meta["target"] = target
        meta["machine"].update(llvm_mcpu=target["mcpu"], cores=target["num-cores"])
    dst = tmp_path / "logs" / "host" / (f"{target['mcpu']}-{target['num-cores']}cores" if target else src.name)
    shutil.copytree(src, dst)
    (dst / tuning_db.META).write_text(json.dumps(meta))
    return dst


def test_a_stale_log_for_another_cpu_is_reported_and_one_for_this_cpu_fails(tmp_path):
    from c2f_edge.backend import targets
    from c2f_edge.backend.pipeline import PIPELINE_VERSION

    here = targets.get("host")
    other = "znver4" if here.to_json()["mcpu"] != "znver4" else "rocketlake"  # any CPU but this one
    path = stale_copy(tmp_path, target={**here.to_json(), "mcpu": other})
    with pytest.warns(StaleLogWarning, match=rf"pipeline version {PIPELINE_VERSION + 1}, this is "
                                             rf"{PIPELINE_VERSION}; re-tune on \w+, \d+ cores \(.+\)"):
        assert check_shipped_log(path, Path("unused.onnx"), "any graph") == "stale"
    mine = stale_copy(tmp_path / "mine", target=here.to_json())
    assert mine.name == here.machine()
    with pytest.raises(AssertionError, match="is this machine's tuning log"):
        check_shipped_log(mine, Path("unused.onnx"), "any graph")


def test_targets_lists_the_logs_with_fits_or_stale(tmp_path, monkeypatch, capsys):
    from c2f_edge import cli
    from c2f_edge.backend import targets

    here = targets.get("host")
    stale_copy(tmp_path, target=here.to_json())
    monkeypatch.setenv(tuning_db.ENV_ROOT, str(tmp_path / "logs"))
    assert cli.main(["targets"]) == 0
    row = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith(f"host/{here.machine()}")]
    assert len(row) == 1 and "(this machine)" in row[0] and "stale: tuned with c2f-edge pipeline version" in row[0]
    monkeypatch.setenv(tuning_db.ENV_ROOT, str(SHIPPED))
    assert cli.main(["targets"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("host/")]
    assert rows and all(" fits" in r or " stale: " in r for r in rows)


def test_a_broken_log_is_listed_as_unreadable_and_the_others_still_are(tmp_path, monkeypatch, capsys):
    from c2f_edge import cli

    make_log(tmp_path / "arm64")
    (tmp_path / "rpi4").mkdir()
    (tmp_path / "rpi4" / tuning_db.RECORD_FILE).write_text("")
    (tmp_path / "rpi4" / tuning_db.META).write_text("{not json")
    monkeypatch.setenv(tuning_db.ENV_ROOT, str(tmp_path))
    assert cli.main(["targets"]) == 0
    out = capsys.readouterr().out
    assert any(ln.startswith("arm64 ") and "fits" in ln for ln in out.splitlines())
    assert any(ln.startswith("rpi4 ") and "unreadable:" in ln for ln in out.splitlines())


def test_an_emulated_log_can_be_retuned_on_any_machine():
    from types import SimpleNamespace

    log = SimpleNamespace(meta={"machine": {"kind": "emulated", "cpu": "cortex-a76"}}, path=Path("tuning_logs/rpi5"))
    assert tuning_db.tuned_on(log) == "any machine, emulated cortex-a76 (tune --emulated)"
