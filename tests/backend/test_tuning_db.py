import json

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


@pytest.mark.slow
def test_the_shipped_host_logs_fit_todays_pipeline_and_graph(onnx_artifact):
    """Every committed host log still applies: same TVM, target and graph, the current PIPELINE_VERSION,
    and a record for every kernel today's pipeline builds. A change to the passes that alters the
    kernels without a version bump would make `compile --target host` quietly replay fewer records."""
    from pathlib import Path

    from c2f_edge.backend import targets, tvm_build
    from c2f_edge.core.onnx_file import graph_signature, load_onnx
    from c2f_edge.tune.tasks import extract_tasks

    root = Path(__file__).resolve().parents[2] / "tuning_logs" / "host"
    machines = tuning_db.machine_logs(root)
    assert machines, "no shipped host log"
    spec = targets.get("host")
    signature = graph_signature(load_onnx(onnx_artifact / "model.onnx"))
    for machine in machines:
        log = tuning_db.read_log(root / machine)
        # the host target as it was on the machine that tuned it ("@system" values from the log)
        target = {k: log.meta["target"][k] if v == "@system" else v for k, v in spec.target.items()}
        assert tuning_db.mismatch(log, target, signature) is None
        db = tvm_build.open_database(root / machine)
        tasks = extract_tasks(onnx_artifact / "model.onnx", target)
        missing = [t.task_name for t in tasks if not db.has_workload(t.dispatched[0])]
        assert not missing, f"{machine}: no records for {missing}"
