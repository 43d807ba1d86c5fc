"""`c2f-edge compile`: bundles per target, running them, and failing cleanly."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from c2f_edge.backend.crosslink import elf_arch
from c2f_edge.backend.pipeline import PIPELINE_VERSION, source_digest
from c2f_edge.cli import main
from c2f_edge.compile import LIBRARY, load_bundle
from c2f_edge.core.artifacts import sha256_file

ATOL = 1e-4


def _manifest(bundle):
    return json.loads((bundle / "manifest.json").read_text())


def _check_bundle(bundle, target: str, onnx_dir):
    m = _manifest(bundle)
    assert m["kind"] == "tvm-bundle" and m["target"]["name"] == target
    assert m["files"][LIBRARY]["sha256"] == sha256_file(bundle / LIBRARY)
    assert m["files"][LIBRARY]["bytes"] == (bundle / LIBRARY).stat().st_size
    onnx_m = json.loads((onnx_dir / "manifest.json").read_text())
    assert m["onnx"]["sha256"] == sha256_file(onnx_dir / "model.onnx")
    assert m["onnx"]["graph_signature"] == onnx_m["graph_signature"]
    assert m["input"]["name"] == "input" and m["input"]["shape"] == [1, 3, 224, 224]
    assert m["input"]["normalization"]["mean"] == [0.485, 0.456, 0.406]
    assert m["output"]["shape"] == [1, 1000]
    assert m["tuning"]["status"] == "untuned" and "--tuning-log none" in m["tuning"]["note"]
    assert m["tuning"]["kernels"]["from_log"] == 0 and m["tuning"]["kernels"]["total"] > 10
    assert m["versions"]["apache-tvm"] and m["timings_s"]["total"] > 0
    assert m["versions"]["c2f-edge pipeline"] == PIPELINE_VERSION  # what scripts/bench_host.py reuses bundles by
    assert m["versions"]["c2f-edge backend source"] == source_digest()
    assert m["bundle_bytes"] >= m["files"][LIBRARY]["bytes"]
    assert "tvm.runtime.load_module" in (bundle / "README.txt").read_text()
    # Nothing but the bundle's three files; no temp dirs left beside it.
    assert sorted(p.name for p in bundle.iterdir()) == ["README.txt", "manifest.json", LIBRARY]
    assert [p.name for p in bundle.parent.iterdir()] == [target]
    return m


def _torch_reference(x):
    import torch

    from c2f_edge.models.weights import load_model

    model, _ = load_model("n", weights="synthetic", seed=0)
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@pytest.mark.slow
def test_host_bundle_runs_here_and_matches_pytorch(host_bundle, onnx_artifact):
    from c2f_edge.core.images import photo_batch

    m = _check_bundle(host_bundle, "host", onnx_artifact)
    assert elf_arch(host_bundle / LIBRARY) == "x86_64"
    # The build's own check ran (host bundles run here) and passed.
    assert m["parity"]["status"] == "passed" and m["parity"]["local"]["max_abs_diff"] <= ATOL
    x = photo_batch(2)
    out = load_bundle(host_bundle)(x)
    ref = _torch_reference(x)
    assert out.shape == (2, 1000)
    assert np.abs(out - ref).max() <= ATOL
    assert (out.argmax(-1) == ref.argmax(-1)).all()


@pytest.mark.slow
def test_host_builds_split_reductions_by_default_and_matches_the_unsplit_build(host_bundle, onnx_artifact, tmp_path,
                                                                                capsys):
    """host.toml says split_reduction = true: the default host bundle takes the two convs it fits (counted apart
    from the tuning log's), and agrees with PyTorch and with a --no-split-reduction build."""
    from c2f_edge.backend import targets
    from c2f_edge.core.images import photo_batch

    split = targets.get("host").to_json()["num-cores"] >= 2  # one core has nothing to split
    m = _manifest(host_bundle)
    assert m["config"]["split_reduction"] is split
    assert m["tuning"]["kernels"]["split_reduction"] == (3 if split else 0)  # two fc2 convs, the classifier
    out = tmp_path / "host"
    assert main(["compile", "--target", "host", "--onnx", str(onnx_artifact / "model.onnx"), "--tuning-log", "none",
                 "--no-split-reduction", "--out", str(out)]) == 0
    assert "split reductions" not in capsys.readouterr().out
    m = _check_bundle(out, "host", onnx_artifact)
    assert m["config"]["split_reduction"] is False and m["tuning"]["kernels"]["split_reduction"] == 0
    assert m["parity"]["status"] == "passed" and m["parity"]["local"]["max_abs_diff"] <= ATOL
    x = photo_batch(2)
    unsplit = load_bundle(out)(x)
    assert np.abs(unsplit - _torch_reference(x)).max() <= ATOL
    assert np.abs(unsplit - load_bundle(host_bundle)(x)).max() <= ATOL


@pytest.mark.slow
def test_arm64_bundle_is_aarch64_elf(arm64_bundle, onnx_artifact):
    m = _check_bundle(arm64_bundle, "arm64", onnx_artifact)
    head = (arm64_bundle / LIBRARY).read_bytes()[:20]
    assert head[:4] == b"\x7fELF" and head[4] == 2  # 64-bit
    assert struct.unpack("<H", head[16:18])[0] == 3  # ET_DYN: a shared object
    assert elf_arch(arm64_bundle / LIBRARY) == "aarch64"
    assert m["target"]["json"]["mtriple"] == "aarch64-linux-gnu"
    assert m["parity"]["status"] == "not run"  # cannot run here; the emulated-board test runs it
    assert m["linker"]["name"].startswith("zig")


@pytest.mark.slow
def test_armv7_bundle_is_32bit_eabi5_hardfloat(armv7_bundle, onnx_artifact):
    _check_bundle(armv7_bundle, "armv7", onnx_artifact)
    head = (armv7_bundle / LIBRARY).read_bytes()[:52]
    assert head[4] == 1 and elf_arch(armv7_bundle / LIBRARY) == "arm32"  # ELFCLASS32, EM_ARM
    e_flags = struct.unpack("<I", head[36:40])[0]
    assert e_flags & 0xFF000000 == 0x05000000  # EABI version 5
    assert e_flags & 0x400  # EF_ARM_ABI_FLOAT_HARD


@pytest.mark.slow
@pytest.mark.parametrize("gpu", ["mali", "adreno"])
def test_gpu_bundles_carry_opencl_kernels(gpu, request, onnx_artifact):
    bundle = request.getfixturevalue(f"{gpu}_bundle")
    m = _check_bundle(bundle, gpu, onnx_artifact)
    assert "opencl" in m["runtime"]["device_modules"] and m["runtime"]["device"] == "opencl"
    assert m["target"]["host_json"]["mtriple"] == "aarch64-linux-gnu"
    assert elf_arch(bundle / LIBRARY) == "aarch64"  # the host code runs on the board's CPU
    blob = (bundle / LIBRARY).read_bytes()
    assert blob.count(b"__kernel void") >= 20  # the OpenCL source is packed into model.so
    assert "OpenCL" in (bundle / "README.txt").read_text()


# --- failures: one-line error + hint, non-zero exit, no bundle ------------------------------------------

def _fails(argv, capsys, *fragments):
    rc = main(argv)
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(("error:", "hint:"))]
    assert rc != 0
    assert len([ln for ln in lines if ln.startswith("error:")]) == 1 and "Traceback" not in err
    assert any(ln.startswith("hint:") for ln in lines)
    for f in fragments:
        assert f in err, err
    return err


def _no_bundle(out):
    assert not out.exists()
    assert not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}")]


@pytest.fixture
def fake_onnx_dir(tmp_path):
    """For failures that happen before the ONNX is read: a path that only needs to exist."""
    d = tmp_path / "onnx"
    d.mkdir()
    (d / "model.onnx").write_bytes(b"\x08\x07")
    return d


def test_vulkan_fails_clearly(tmp_path, fake_onnx_dir, capsys):
    out = tmp_path / "b"
    _fails(["compile", "--target", "vulkan", "--onnx", str(fake_onnx_dir / "model.onnx"), "--out", str(out)],
           capsys, "no vulkan code generator", "target.build.vulkan")
    _no_bundle(out)


def test_unknown_target(tmp_path, fake_onnx_dir, capsys):
    out = tmp_path / "b"
    _fails(["compile", "--target", "rasp4", "--onnx", str(fake_onnx_dir / "model.onnx"), "--out", str(out)],
           capsys, "unknown target 'rasp4'", "arm64", "did you mean 'rpi4'")
    _no_bundle(out)


def test_missing_onnx(tmp_path, capsys):
    out = tmp_path / "b"
    _fails(["compile", "--target", "host", "--onnx", str(tmp_path / "nope.onnx"), "--out", str(out)],
           capsys, "ONNX file not found", "c2f-edge export")
    _no_bundle(out)


def test_corrupt_onnx(tmp_path, capsys):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"this is not a protobuf" * 10)
    out = tmp_path / "b"
    _fails(["compile", "--target", "arm64", "--onnx", str(bad), "--out", str(out)], capsys,
           "is not a valid ONNX model")
    _no_bundle(out)


def test_no_usable_cross_linker(tmp_path, fake_onnx_dir, capsys, monkeypatch):
    out = tmp_path / "b"
    onnx = str(fake_onnx_dir / "model.onnx")
    _fails(["compile", "--target", "arm64", "--onnx", onnx, "--out", str(out),
            "--cross-compiler", "aarch64-linux-gnu-g++-missing"], capsys,
           "not on PATH", "apt-get install g++-aarch64-linux-gnu")
    _no_bundle(out)
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "ziglang" else real(n, *a))
    _fails(["compile", "--target", "armv7", "--onnx", onnx, "--out", str(out)], capsys,
           "ziglang package is not installed", "pip install ziglang")
    _no_bundle(out)
    monkeypatch.delenv("ANDROID_NDK_HOME", raising=False)
    monkeypatch.delenv("ANDROID_NDK_ROOT", raising=False)
    _fails(["compile", "--target", "android-arm64", "--onnx", onnx, "--out", str(out)], capsys,
           "ANDROID_NDK_HOME is not set")
    _no_bundle(out)


def test_bad_verify_mode_fails_before_building(tmp_path, fake_onnx_dir, capsys):
    from c2f_edge.compile.verify import VERIFIERS, resolve_verifier

    out = tmp_path / "b"
    _fails(["compile", "--target", "arm64", "--onnx", str(fake_onnx_dir / "model.onnx"), "--out", str(out),
            "--verify", "bogus"], capsys, "unknown --verify mode 'bogus'")
    _no_bundle(out)
    assert callable(resolve_verifier("local")) and resolve_verifier("none") == "none"
    assert {"local", "emulated", "rpc://"} <= set(VERIFIERS)
    _fails(["compile", "--target", "arm64", "--onnx", str(fake_onnx_dir / "model.onnx"), "--out", str(out),
            "--verify", "rpc://no-port"], capsys, "bad RPC address")
    _no_bundle(out)


def test_bad_tuning_log_and_no_model(tmp_path, fake_onnx_dir, capsys, monkeypatch):
    out = tmp_path / "b"
    _fails(["compile", "--target", "host", "--onnx", str(fake_onnx_dir / "model.onnx"), "--out", str(out),
            "--tuning-log", str(tmp_path)], capsys, "is not a tuning log")
    _no_bundle(out)
    monkeypatch.chdir(tmp_path)  # no build/onnx/model.onnx here
    _fails(["compile", "--target", "host", "--out", str(out)], capsys, "no ONNX model to compile")
    _no_bundle(out)


def test_split_reduction_default_applies_only_where_it_can():
    """A target file's split_reduction = true is a default: builds it cannot apply to go without it, quietly;
    only an explicit --split-reduction is refused there."""
    from dataclasses import replace

    from c2f_edge.backend import targets
    from c2f_edge.compile.stage import split_reduction_for
    from c2f_edge.core.errors import UsageError

    def default(name, precision="fp32", cores=None):
        spec = replace(targets.get(name), split_reduction=True)
        t = spec.to_json() | ({"num-cores": cores} if cores else {})
        return split_reduction_for(None, spec, t, precision)

    assert default("host", cores=2) is True and default("rpi5") is True
    assert default("host", cores=1) is False  # one core: nothing to split
    assert default("rpi5", precision="fp16") is False
    assert default("arm64") is False and default("mali") is False
    rpi5 = targets.get("rpi5")  # no split_reduction in its file
    assert split_reduction_for(None, rpi5, rpi5.to_json(), "fp32") is False
    assert split_reduction_for(True, rpi5, rpi5.to_json(), "fp32") is True
    host = targets.get("host")
    assert split_reduction_for(False, host, host.to_json(), "fp32") is False
    with pytest.raises(UsageError, match="is for fp32 builds"):
        split_reduction_for(True, host, host.to_json(), "fp16")


def test_split_reduction_needs_a_cpu_target_with_cores(tmp_path, fake_onnx_dir, capsys):
    out = tmp_path / "b"
    onnx = str(fake_onnx_dir / "model.onnx")
    _fails(["compile", "--target", "mali", "--onnx", onnx, "--split-reduction", "--out", str(out)], capsys,
           "--split-reduction is a CPU schedule; mali is a GPU target")
    _no_bundle(out)
    _fails(["compile", "--target", "arm64", "--onnx", onnx, "--split-reduction", "--out", str(out)], capsys,
           "names fewer than 2 (no num-cores)", "num-cores")
    _no_bundle(out)
    _fails(["compile", "--target", "rpi5", "--onnx", onnx, "--split-reduction", "--precision", "fp16", "--out", str(out)],
           capsys, "--split-reduction is for fp32 builds; this one is fp16")
    _no_bundle(out)


@pytest.mark.slow
def test_failure_during_build_leaves_no_bundle(tmp_path, onnx_artifact, capsys):
    """A link error after the slow compile (a cross-linker that fails): the temp dir is removed, an older
    bundle is kept intact."""
    out = tmp_path / "b"
    out.mkdir()
    (out / "manifest.json").write_text("{}")  # an earlier bundle
    _fails(["compile", "--target", "arm64", "--onnx", str(onnx_artifact / "model.onnx"), "--tuning-log", "none",
            "--cross-compiler", "false", "--out", str(out)], capsys, "failed to link model.so")
    assert (out / "manifest.json").read_text() == "{}"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


def test_a_native_crash_in_the_build_is_one_error(tiny_onnx, tmp_path, capsys, monkeypatch):
    """The build runs in a child process, so a native crash there (here the child is killed by SIGSEGV
    as it starts, through a sitecustomize on its PYTHONPATH) is a one-line error and leaves nothing."""
    crash = tmp_path / "crash"
    crash.mkdir()
    (crash / "sitecustomize.py").write_text("import os, signal\nos.kill(os.getpid(), signal.SIGSEGV)\n")
    monkeypatch.setenv("PYTHONPATH", str(crash))
    out = tmp_path / "b"
    _fails(["compile", "--target", "host", "--onnx", str(tiny_onnx), "--tuning-log", "none", "--out", str(out)],
           capsys, "TVM crashed (SIGSEGV) while building for host")
    _no_bundle(out)


# --- the arm64 bundle on the emulated aarch64 board -----------------------------------------------------

@pytest.mark.slow
@pytest.mark.emulated
def test_arm64_bundle_runs_on_emulated_board(arm64_bundle, emulated_board, record_property):
    """Upload over TVM RPC, run one photo under qemu, match PyTorch (emulated time is not a latency)."""
    import time

    from c2f_edge.board import rpc
    from c2f_edge.compile import load_remote_bundle
    from c2f_edge.core.images import photo_batch

    x = photo_batch(1)
    remote = rpc.connect(emulated_board, session_timeout=900)
    try:
        t0 = time.perf_counter()
        run = load_remote_bundle(arm64_bundle, remote)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = run(x)
        t_run = time.perf_counter() - t0
    finally:
        run = remote = None  # the board serves one session; free it for the next test
    record_property("emulated_upload_load_s", round(t_load, 1))
    record_property("emulated_inference_s", round(t_run, 1))
    print(f"emulated board: upload+load {t_load:.1f} s, one inference {t_run:.1f} s (emulated, not a latency)")
    ref = _torch_reference(x)
    assert np.abs(out - ref).max() <= ATOL
    assert out.argmax(-1)[0] == ref.argmax(-1)[0]


@pytest.mark.slow
@pytest.mark.emulated
def test_split_reduction_rpi5_bundle_matches_pytorch_on_emulated_board(onnx_artifact, emulated_board, tmp_path):
    """--split-reduction on a 4-core ARM target: the aarch64 code of the three split kernels, run under qemu."""
    from c2f_edge.board import rpc
    from c2f_edge.compile import CompileConfig, compile_bundle, load_remote_bundle
    from c2f_edge.core.images import photo_batch

    bundle = compile_bundle(CompileConfig(target="rpi5", onnx=str(onnx_artifact / "model.onnx"), tuning_log="none",
                                          split_reduction=True, verify="none", out=str(tmp_path / "rpi5")))
    assert _manifest(bundle)["tuning"]["kernels"]["split_reduction"] == 3
    x = photo_batch(1)
    remote = rpc.connect(emulated_board, session_timeout=900)
    try:
        out = load_remote_bundle(bundle, remote)(x)
    finally:
        remote = None  # the board serves one session; free it for the next test
    ref = _torch_reference(x)
    assert np.abs(out - ref).max() <= ATOL
    assert out.argmax(-1)[0] == ref.argmax(-1)[0]


# --- tuning logs: a MetaSchedule database is replayed into the build --------------------------------------

def _tiny_onnx(path):
    """conv-relu-pool: three kernels, compiles in seconds."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).standard_normal((8, 3, 3, 3)).astype(np.float32), "w")
    g = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["r"]),
         helper.make_node("GlobalAveragePool", ["r"], ["p"]), helper.make_node("Flatten", ["p"], ["logits"])],
        "tiny", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 8])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))
    return model


def _parallel_everywhere_log(log_dir, onnx_model, spec):
    """A tuning log whose records parallelize each kernel's outer loop: visible in the lowered TIR."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from c2f_edge.backend import pipeline, tuning_db, tvm_build
    from c2f_edge.core.onnx_file import graph_signature

    target = tvm.target.Target(spec.to_json())
    mod, params = tvm_build.import_onnx(onnx_model)
    fused = pipeline.legalize_and_fuse(tvm_build.bind_params(mod, params), target)
    db = ms.database.JSONDatabase(work_dir=str(log_dir))
    tasks = ms.relax_integration.extract_tasks(fused, target)
    for task in tasks:
        sch = tvm.s_tir.Schedule(task.dispatched[0])
        block = sch.get_output_blocks(sch.get_sblock("root"))[0]
        sch.parallel(sch.get_loops(block)[0])
        wl = db.commit_workload(task.dispatched[0])
        db.commit_tuning_record(ms.database.TuningRecord(sch.trace, wl, run_secs=[1e-3], target=target))
    tuning_db.write_meta(log_dir, target=spec.to_json(), target_name=spec.name,
                         graph_signature=graph_signature(onnx_model), trials=len(tasks))
    return mod, params, len(tasks)


@pytest.mark.slow
def test_tuning_log_is_replayed(tmp_path, monkeypatch):
    import tvm

    from c2f_edge.backend import pipeline, targets, tvm_build
    from c2f_edge.compile import CompileConfig, compile_bundle
    from c2f_edge.core.artifacts import read_manifest

    spec = targets.get("host")
    monkeypatch.chdir(tmp_path)  # tuning_logs/host/<cpu>-<cores>cores/ is looked up in the working directory
    log_dir = tmp_path / "tuning_logs" / "host" / spec.machine()
    log_dir.mkdir(parents=True)
    onnx_model = _tiny_onnx(tmp_path / "tiny.onnx")
    mod, params, n_tasks = _parallel_everywhere_log(log_dir, onnx_model, spec)
    assert n_tasks >= 2

    def kernels(database):
        lowered = pipeline.pipeline(spec.to_json(), database)(tvm_build.bind_params(mod, params))
        return {gv.name_hint: f.script() for gv, f in lowered.functions_items() if isinstance(f, tvm.tirx.PrimFunc)}

    default, tuned = kernels(None), kernels(tvm_build.open_database(log_dir))
    assert len(tuned) == n_tasks and all("T.parallel" in s for s in tuned.values())
    # Every kernel took its record, not the default schedule it would get untuned.
    assert all(tuned[name] != default[name] for name in tuned)

    # The stage finds the log by target and machine, applies it, records it, and the result still matches ORT.
    out = compile_bundle(CompileConfig(target="host", onnx=str(tmp_path / "tiny.onnx"), out=str(tmp_path / "b")))
    m = read_manifest(out)
    assert m["tuning"]["status"] == "tuned" and m["tuning"]["log"]["records"] == n_tasks
    assert m["tuning"]["note"].startswith("tuned:")
    assert m["output"]["shape"] == [1, 8] and m["input"]["shape"] == [1, 3, 32, 32]
    assert m["parity"]["status"] == "passed" and m["parity"]["local"]["max_abs_diff"] <= ATOL

    # A log for another graph is skipped with a note, not silently half-applied.
    _tiny_onnx(tmp_path / "other.onnx")
    import onnx

    other = onnx.load(str(tmp_path / "other.onnx"))
    other.graph.node[0].attribute[0].ints[:] = [0, 0, 0, 0]  # no padding: another graph
    other.graph.output[0].type.tensor_type.shape.dim[1].dim_value = 8
    onnx.save(other, str(tmp_path / "other.onnx"))
    out2 = compile_bundle(CompileConfig(target="host", onnx=str(tmp_path / "other.onnx"), out=str(tmp_path / "c")))
    m2 = read_manifest(out2)
    assert m2["tuning"]["status"] == "untuned" and "graph_signature differs" in m2["tuning"]["note"]


def test_compile_on_the_cpu_of_a_stale_log_skips_it_with_its_note(tmp_path, monkeypatch):
    """`compile --target host` on the machine that tuned a shipped log which is stale (here: the next
    PIPELINE_VERSION) builds untuned and says why, in the manifest and on the command line."""
    from c2f_edge.backend import targets, tuning_db
    from c2f_edge.core.artifacts import read_manifest
    from tests.backend.test_tuning_db import stale_copy

    log = stale_copy(tmp_path)
    tuned_for = json.loads((log / tuning_db.META).read_text())["target"]
    monkeypatch.setattr(targets, "_system_value", lambda key: tuned_for[key])  # "@system" is that CPU
    assert targets.get("host").machine() == log.name
    monkeypatch.setenv(tuning_db.ENV_ROOT, str(tmp_path / "logs"))
    _tiny_onnx(tmp_path / "tiny.onnx")
    assert main(["compile", "--target", "host", "--onnx", str(tmp_path / "tiny.onnx"), "--out", str(tmp_path / "b"),
                 "--verify", "none"]) == 0
    note = (f"untuned: skipped {log}: tuned with c2f-edge pipeline version {PIPELINE_VERSION + 1}, "
            f"this is {PIPELINE_VERSION}")
    m = read_manifest(tmp_path / "b")
    assert m["tuning"]["status"] == "untuned" and m["tuning"]["note"] == note
