"""scripts/bench_host.py's bookkeeping: round order, pooling, ratios, children. No model is timed here."""

import importlib.util
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "bench_host.py"
_spec = importlib.util.spec_from_file_location("bench_host", SCRIPT)
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def test_rounds_rotate_so_no_backend_is_always_first_or_last():
    names = list(bench.NAMES)
    orders = [bench.rotated(names, r) for r in range(3)]
    for order in orders:
        assert sorted(order) == sorted(names)
    assert len({o[0] for o in orders}) == 3 and len({o[-1] for o in orders}) == 3
    # As many rounds as backends: each one goes first once and last once.
    full = [bench.rotated(names, r) for r in range(len(names))]
    assert sorted(o[0] for o in full) == sorted(names) and sorted(o[-1] for o in full) == sorted(names)


def test_samples_of_all_rounds_are_pooled():
    r = bench.summarize([[0.010, 0.012, 0.014, 0.016, 0.018], [0.020, 0.030, 0.040, 0.050, 0.060]])
    assert r["median_ms"] == pytest.approx(19.0)  # median of all ten, not the median of medians (27.0)
    assert r["p90_ms"] == pytest.approx(50.0)
    assert r["runs"] == 10
    assert r["round_medians_ms"] == pytest.approx([14.0, 40.0])


def test_ratios_are_taken_round_by_round():
    ort = bench.summarize([[0.010], [0.020]])
    tvm = bench.summarize([[0.012], [0.022]])
    assert bench.round_ratios(tvm, ort) == pytest.approx([1.2, 1.1])
    results = {"onnxruntime": ort, "tvm_untuned": tvm}
    bench.add_ratios(results, peak=100.0)
    assert results["tvm_untuned"]["ratio_vs_ort"] == pytest.approx(17.0 / 15.0)
    assert results["onnxruntime"]["round_ratios"] == pytest.approx([1.0, 1.0])


def test_a_variant_row_is_paired_with_its_default_round_by_round():
    """Rounds drift on a busy machine; the ratio of a variant (--with-unsplit, --baseline) to its partner is
    taken within each round."""
    rows = {"tvm_untuned_unsplit": bench.summarize([[0.020], [0.030], [0.025]]),
            "tvm_untuned": bench.summarize([[0.019], [0.027], [0.025]]),
            "tvm_tuned": bench.summarize([[0.020], [0.030], [0.025]])}
    pairs = bench.paired(rows)
    assert list(pairs) == ["tvm_untuned / tvm_untuned_unsplit"]  # no tuned unsplit row, no pair
    p = pairs["tvm_untuned / tvm_untuned_unsplit"]
    assert p["per_round"] == pytest.approx([0.95, 0.9, 1.0])
    assert (p["median"], p["min"], p["max"]) == pytest.approx((0.95, 0.9, 1.0))
    before = {"baseline": bench.summarize([[0.025], [0.040]]), "tvm_untuned": bench.summarize([[0.020], [0.030]])}
    assert bench.paired(before)["tvm_untuned / baseline"]["per_round"] == pytest.approx([0.8, 0.75])


def test_children_get_their_share_of_runs_and_time():
    args = bench.parse_args(["--runs", "10", "--rounds", "3", "--max-seconds", "60", "--threads", "2"])
    cmd = bench.child_cmd("onnxruntime", "m.onnx", Path("/tmp/w"), 2, args)
    opts = dict(zip(cmd[2::2], cmd[3::2], strict=True))
    assert opts["--worker"] == "onnxruntime" and opts["--round"] == "2" and opts["--model"] == "m.onnx"
    assert opts["--runs"] == "4" and float(opts["--max-seconds"]) == pytest.approx(20.0)


def test_a_failing_child_is_one_line_error(capsys):
    crash = "import sys; print('loading', file=sys.stderr); raise RuntimeError('cannot load model.so')"
    with pytest.raises(SystemExit) as e:
        bench.run_child("tvm_tuned", [sys.executable, "-c", crash], {})
    assert e.value.code == "error: tvm_tuned failed: RuntimeError: cannot load model.so"
    with pytest.raises(SystemExit) as e:
        bench.run_child("tvm_tuned", [sys.executable, "-c", "import os; os._exit(3)"], {})
    assert e.value.code == "error: tvm_tuned failed: exit code 3"


def test_a_broken_bundle_fails_its_worker(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.so").write_bytes(b"not an ELF")
    np.save(tmp_path / "input.npy", np.zeros((1, 3, 4, 4), np.float32))
    args = bench.parse_args(["--runs", "1", "--rounds", "1"])
    cmd = bench.child_cmd("tvm_untuned", str(bundle), tmp_path, 0, args)
    with pytest.raises(SystemExit) as e:
        bench.run_child("tvm_untuned", cmd, dict(bench.os.environ))
    assert e.value.code.startswith("error: tvm_untuned failed: ")
    assert "\n" not in e.value.code


def _relu_onnx(path: Path, shape: list[int]) -> None:
    import onnx

    h = onnx.helper
    graph = h.make_graph([h.make_node("Relu", ["input"], ["output"])], "g",
                         [h.make_tensor_value_info("input", onnx.TensorProto.FLOAT, shape)],
                         [h.make_tensor_value_info("output", onnx.TensorProto.FLOAT, shape)])
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), path)


def test_ort_worker_leaves_times_and_output_and_never_loads_torch(tmp_path):
    shape = [1, 3, 4, 4]
    _relu_onnx(tmp_path / "m.onnx", shape)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    np.save(tmp_path / "input.npy", x)
    argv = bench.child_cmd("onnxruntime", str(tmp_path / "m.onnx"), tmp_path, 1,
                           bench.parse_args(["--runs", "5", "--rounds", "1", "--warmup", "1"]))[1:]
    code = (f"import runpy, sys\nsys.argv = {argv!r}\ntry:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "except SystemExit:\n    pass\nprint(sys.modules.get('torch') is not None)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False", proc.stderr
    record = json.loads((tmp_path / "onnxruntime-1.json").read_text())
    assert len(record["times"]) == 5 and record["load_s"] > 0
    np.testing.assert_array_equal(np.load(tmp_path / "onnxruntime.npy"), np.maximum(x, 0))


def test_a_tuned_row_needs_a_build_that_applied_records():
    assert bench.not_tuned({"status": "tuned", "kernels": {"total": 42, "from_log": 40}}) is None
    assert "none of the build's 42 kernels" in bench.not_tuned({"status": "tuned",
                                                                "kernels": {"total": 42, "from_log": 0}})
    assert "untuned" in bench.not_tuned({"status": "untuned", "note": "no log", "kernels": {"from_log": 0}})
    assert bench.not_tuned({"status": "tuned"})  # a manifest from before the count was recorded


def test_a_stale_tuning_log_skips_the_tuned_row_with_its_note_before_compiling(tmp_path):
    from c2f_edge.backend import targets
    from c2f_edge.backend.pipeline import PIPELINE_VERSION
    from tests.backend.test_tuning_db import stale_copy
    from tests.compile.test_stage import _tiny_onnx

    here = targets.get("host")
    log = stale_copy(tmp_path, target=here.to_json())  # tuned here, pipeline bumped
    _tiny_onnx(tmp_path / "tiny.onnx")
    args = bench.parse_args(["--tuning-log", str(log), "--bundle-dir", str(tmp_path / "bundles"),
                             "--skip", "torch_eager", "torch_channels_last", "tvm_untuned"])
    notes = {}
    models, built = bench.prepare_models(tmp_path / "tiny.onnx", args, notes)
    assert "tvm_tuned" not in models and built == {}
    assert notes["tvm_tuned"].startswith(
        f"skipped: the tuning log {log} is stale (tuned with c2f-edge pipeline version {PIPELINE_VERSION + 1}, "
        f"this is {PIPELINE_VERSION}); re-tune on ")
    assert not (tmp_path / "bundles").exists()  # refused before minutes of compiling, not after


def test_with_unsplit_adds_unsplit_builds_and_reuses_only_a_bundle_built_the_same_way(tmp_path, monkeypatch):
    """The default rows take the host target's split reduction; --with-unsplit adds rows built with
    `compile --no-split-reduction`, and a cached default build is not one of them."""
    import c2f_edge.compile as compile_pkg
    from c2f_edge.backend import targets
    from c2f_edge.compile.stage import bundle_versions, split_reduction_for
    from c2f_edge.core.artifacts import sha256_file
    from tests.compile.test_stage import _tiny_onnx

    onnx = tmp_path / "tiny.onnx"
    _tiny_onnx(onnx)
    host = targets.get("host")
    default = split_reduction_for(None, host, host.to_json(), "fp32")  # True with 2 cores or more
    assert default is (host.to_json()["num-cores"] >= 2)
    built_with = []

    def fake_compile(cfg):
        built_with.append((Path(cfg.out).name, cfg.split_reduction))
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
        manifest = {"versions": bundle_versions(), "onnx": {"sha256": sha256_file(onnx)},
                    "config": {"tuning_log": cfg.tuning_log, "blocked_layout": True,
                               "split_reduction": cfg.split_reduction},
                    "tuning": {"status": "untuned", "note": "untuned", "kernels": {"total": 9, "from_log": 0}}}
        (Path(cfg.out) / "manifest.json").write_text(json.dumps(manifest))
        return Path(cfg.out)

    monkeypatch.setattr(compile_pkg, "compile_bundle", fake_compile)
    skip = ["--skip", "torch_eager", "torch_channels_last", "torch_compile", "openvino", "tvm_tuned", "tvm_tuned_unsplit"]
    args = bench.parse_args(["--bundle-dir", str(tmp_path / "b"), *skip])
    models, _ = bench.prepare_models(onnx, args, {})
    assert "tvm_untuned_unsplit" not in models and built_with == [("tvm_untuned", default)]
    args = bench.parse_args(["--bundle-dir", str(tmp_path / "b"), "--with-unsplit", *skip])
    models, _ = bench.prepare_models(onnx, args, {})
    assert built_with == [("tvm_untuned", default), ("tvm_untuned_unsplit", False)]  # the default build was reused
    assert models["tvm_untuned_unsplit"] == str(tmp_path / "b" / "tvm_untuned_unsplit")
    # A bundle in the unsplit row's directory built with the split is rebuilt, not timed under the wrong name.
    manifest = tmp_path / "b" / "tvm_untuned_unsplit" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["config"]["split_reduction"] = True
    manifest.write_text(json.dumps(m))
    bench.prepare_models(onnx, args, {})
    assert built_with[-1] == ("tvm_untuned_unsplit", False) and len(built_with) == 3


@pytest.mark.parametrize("section, key, value, why", [
    (None, None, None, None),
    ("versions", "c2f-edge pipeline", 0, "built by another pipeline version"),
    ("versions", "c2f-edge backend source", "0" * 16, "built from other backend source"),
    ("versions", "c2f-edge backend source", None, "built from other backend source"),
    ("versions", "apache-tvm", "0.26.0", "built by another TVM"),
    ("onnx", "sha256", "0" * 64, "built from another ONNX file"),
    ("config", "tuning_log", "tuning_logs/host/other", "built with another tuning log"),
    ("config", "blocked_layout", False, "built with another layout"),
    ("config", "split_reduction", False, "built with the split reduction off"),
])
def test_a_cached_bundle_is_reused_only_if_this_run_would_build_the_same(tmp_path, section, key, value, why):
    from c2f_edge.compile.stage import bundle_versions
    from c2f_edge.core.artifacts import sha256_file

    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"onnx")
    manifest = {"versions": bundle_versions(), "onnx": {"sha256": sha256_file(onnx)},
                "config": {"tuning_log": "none", "blocked_layout": True, "split_reduction": True}}
    if section:
        manifest[section][key] = value
    assert bench.outdated(manifest, onnx, "none", True, True) == why


def test_a_baseline_must_be_a_host_bundle_built_for_this_cpu(tmp_path):
    from c2f_edge.backend import targets

    bundle = tmp_path / "before"
    assert "no bundle there" in bench.baseline_problem(bundle)
    bundle.mkdir()
    (bundle / "model.so").write_bytes(b"\x7fELF")
    here = targets.get("host").to_json()
    (bundle / "manifest.json").write_text(json.dumps({"target": {"name": "rpi5", "json": {}}}))
    assert "not this machine's host target" in bench.baseline_problem(bundle)
    (bundle / "manifest.json").write_text(json.dumps({"target": {"name": "host", "json": {**here, "mcpu": "x"}}}))
    assert "rebuild it here" in bench.baseline_problem(bundle)
    (bundle / "manifest.json").write_text(json.dumps({"target": {"name": "host", "json": here}}))
    assert bench.baseline_problem(bundle) is None
    with pytest.raises(SystemExit) as e:  # argparse's one-line usage error, before anything is built
        bench.parse_args(["--baseline", str(tmp_path / "missing")])
    assert e.value.code == 2


def test_the_openvino_worker_computes_in_fp32(tmp_path):
    pytest.importorskip("openvino", reason=f"OpenVINO is a bench extra: {bench.INSTALL_BENCH}")
    shape = [1, 3, 8, 8]
    _relu_onnx(tmp_path / "m.onnx", shape)
    # Values whose bf16 rounding would show: 1 + 2^-12 is not a bf16 number.
    x = (1 + np.random.default_rng(0).integers(1, 16, shape) * 2.0**-12).astype(np.float32)
    np.save(tmp_path / "input.npy", x)
    args = bench.parse_args(["--runs", "2", "--rounds", "1", "--warmup", "1", "--threads", "1"])
    record = bench.time_backend("openvino", str(tmp_path / "m.onnx"), tmp_path, 0, args)
    assert len(record["times"]) == 2
    np.testing.assert_array_equal(np.load(tmp_path / "openvino.npy"), x)


def test_a_peer_that_is_not_installed_gets_its_note_and_the_rest_runs(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "openvino" else real(name, *a))
    assert bench.peer_missing("openvino") == f"skipped: OpenVINO is not installed ({bench.INSTALL_BENCH})"
    monkeypatch.setattr(shutil, "which", lambda _: None)
    assert "needs a C++ compiler" in bench.peer_missing("torch_compile")
    args = bench.parse_args(["--skip", "torch_eager", "torch_channels_last", "tvm_untuned", "tvm_tuned"])
    notes = {}
    models, built = bench.prepare_models(tmp_path / "m.onnx", args, notes)
    assert models == {"onnxruntime": str(tmp_path / "m.onnx")} and built == {}
    assert set(notes) == {"openvino", "torch_compile"}


# A row that matches ONNX Runtime to float rounding is printed; one that computes in bf16 (8 significant
# bits), or is off by 1e-2, is refused with its diff and no time.
@pytest.mark.parametrize("name, perturb, refused", [
    ("openvino", lambda y: y + 1e-6, False),
    ("openvino", lambda y: y + 1e-2, True),
    ("torch_compile", lambda y: (y.view(np.uint32) & 0xFFFF0000).view(np.float32), True),
])
def test_a_row_outside_the_fp32_tolerance_is_refused_not_printed(tmp_path, monkeypatch, capsys, name, perturb,
                                                                 refused):
    # ONNX Runtime runs for real on a ReLU of the benchmark's photo; the peer under test returns its output
    # perturbed. Everything after the loaders is the script's own path.
    from c2f_edge.core.onnx_file import INPUT_NAME, ort_session

    _relu_onnx(tmp_path / "m.onnx", [1, 3, 224, 224])
    sess = ort_session(str(tmp_path / "m.onnx"))
    monkeypatch.setattr(bench, "peer_missing", lambda _: None)
    monkeypatch.setattr(bench, "sgemm_peak_gflops", lambda _: {"torch": 100.0, "numpy": 50.0})
    real_load = bench.load_backend

    def load(backend, model, x, threads):
        if backend == name:
            return lambda: perturb(sess.run(None, {INPUT_NAME: x})[0] + 1.0)  # + 1: ReLU's zeros would hide bf16
        if backend == "onnxruntime":
            return lambda: sess.run(None, {INPUT_NAME: x})[0] + 1.0
        return real_load(backend, model, x, threads)

    monkeypatch.setattr(bench, "load_backend", load)
    others = [n for n in bench.NAMES if n not in ("onnxruntime", name)]
    code = bench.main(["--same-process", "--runs", "2", "--warmup", "0", "--onnx", str(tmp_path / "m.onnx"),
                       "--json", str(tmp_path / "b.json"), "--skip", *others])
    out = capsys.readouterr()
    rows = json.loads((tmp_path / "b.json").read_text())["rows"]
    table = [line.split()[0] for line in out.out.splitlines() if line.split()[:1] in ([name], ["onnxruntime"])]
    assert "onnxruntime" in table and "median_ms" in rows["onnxruntime"]
    if refused:
        assert code == 1 and f"refused outside the fp32 tolerance: {name}" in out.err
        assert name not in table and "median_ms" not in rows[name] and rows[name]["status"] == "refused"
        assert f"  {name}: refused: max abs diff vs ORT {rows[name]['max_abs_diff_vs_ort']:.1e}" in out.out
    else:
        assert code == 0 and name in table
        assert rows[name]["max_abs_diff_vs_ort"] == pytest.approx(1e-6, rel=0.1)
        assert rows[name]["median_ms"] > 0 and rows[name]["peak_pct"] > 0
