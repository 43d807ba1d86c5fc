"""The harness bites: one changed weight fails parity and is localized to its block."""

import numpy as np
import pytest

from c2f_edge.core.onnx_file import load_onnx
from c2f_edge.export import scopes
from c2f_edge.parity import localize
from c2f_edge.parity.harness import BackendSpec, run_parity
from c2f_edge.parity.inputs import build_inputs

pytestmark = pytest.mark.slow


def test_boundaries_of_conv2former_n():
    from c2f_edge.models import create_model

    names = localize.boundaries(create_model("n"))
    assert len(names) == 4 + 3 * 14 + 2
    assert names[:4] == ["downsample_layers.0", "stages.0.0.attn", "stages.0.0.mlp", "stages.0.0"]
    assert names[-2:] == ["head", "pred"]
    assert localize.block_of("stages.2.5.attn") == "stages.2.5"
    assert localize.block_of("downsample_layers.2") == "downsample_layers.2"


def test_simplified_onnx_exposes_every_boundary(onnx_artifact):
    """All 48 boundaries are found in the simplified graph and match torch's activations."""
    import onnxruntime as ort

    from c2f_edge.models.weights import load_model

    model, _ = load_model("n", weights="synthetic", seed=0)
    names = localize.boundaries(model)
    onnx_model = load_onnx(onnx_artifact / "model.onnx", check=False)
    tensors = scopes.boundary_tensors_for(onnx_model, onnx_artifact / "model.onnx", names)
    assert list(tensors) == names
    probed = scopes.with_outputs(onnx_model, list(tensors.values()))
    sess = ort.InferenceSession(probed.SerializeToString(), providers=["CPUExecutionProvider"])
    x = build_inputs("photos", n=1).x
    got = dict(zip(names, sess.run(list(tensors.values()), {"input": x})))
    ref = localize.reference_activations(model, x, names)
    res = localize.first_divergence(ref, got, names, threshold=1e-4)
    assert res["diverges_at"] is None and res["compared"] == len(names)
    assert max(p["rel_err"] for p in res["profile"]) < 1e-4


@pytest.mark.parametrize(("initializer", "block", "boundary"), [
    ("stages.2.3.mlp.fc1.weight", "stages.2.3", "stages.2.3.mlp"),
    ("stages.1.0.attn.v.weight", "stages.1.0", "stages.1.0.attn"),
    ("downsample_layers.2.1.weight", "downsample_layers.2", "downsample_layers.2"),
])
def test_one_changed_weight_is_caught_and_localized(mutated_onnx, initializer, block, boundary):
    bad = mutated_onnx(initializer)
    result = run_parity([BackendSpec("onnxruntime", str(bad))], build_inputs("photos", n=1),
                        reference=BackendSpec("torch", str(bad)), quiet=True)
    (entry,) = result["backends"]
    assert not result["passed"] and entry["status"] == "fail" and entry["failures"]
    loc = entry["localization"]
    assert loc["status"] == "ok"
    assert loc["block"] == block and loc["diverges_at"] == boundary
    # everything before the changed block still agrees
    errs = [p["rel_err"] for p in loc["profile"]]
    first = [p["boundary"] for p in loc["profile"]].index(boundary)
    assert max(errs[:first]) < 1e-4 < errs[first]


def test_raw_onnx_has_scopes_that_agree_with_the_simplified_map(raw_onnx, onnx_artifact):
    """The raw export carries module scopes itself; they give the same boundary tensors as the cache."""
    from c2f_edge.models import create_model

    names = localize.boundaries(create_model("n"))
    raw = load_onnx(raw_onnx / "model.onnx", check=False)
    assert scopes.scope_order(raw)
    simplified = load_onnx(onnx_artifact / "model.onnx", check=False)
    assert scopes.scope_order(simplified) == []  # onnxsim drops node metadata: why the export keeps scopes.json
    via_raw = scopes.probe_tensors(simplified, scopes.scope_order(raw), names)
    via_sidecar = scopes.probe_tensors(simplified, scopes.load_scopes(onnx_artifact / scopes.SCOPES_FILE), names)
    via_cache = scopes.probe_tensors(simplified, scopes.architecture_scopes("n", 20), names)
    assert via_raw == via_sidecar == via_cache and len(via_raw) == len(names)
    assert np.all([t in scopes.graph_tensors(simplified) for t in via_raw.values()])


def test_changed_core_ml_weight_is_localized(mutated_coreml_fp32):
    result = run_parity([BackendSpec("coreml", str(mutated_coreml_fp32))], build_inputs("photos", n=1),
                        reference=BackendSpec("torch", str(mutated_coreml_fp32)), quiet=True)
    (entry,) = result["backends"]
    assert entry["status"] == "fail"
    loc = entry["localization"]
    # Core ML exposes whole modules (its attn/mlp vars are unscaled), so the block itself is reported.
    assert loc["status"] == "ok" and loc["block"] == "stages.2.3" and loc["diverges_at"] == "stages.2.3"


def _localized(bundle, spec_name: str, options=None) -> dict:
    result = run_parity([BackendSpec(spec_name, str(bundle), options or {})], build_inputs("photos", n=1),
                        reference=BackendSpec("torch", str(bundle)), quiet=True)
    (entry,) = result["backends"]
    assert not result["passed"] and entry["status"] == "fail"
    return entry["localization"]


def _check_bundle_localization(loc: dict) -> None:
    """The changed weight is in stages.2.3's MLP. A fused bundle has no branch outputs, so the
    divergence is found at the block's output; everything before it matches the bundle's own kernels."""
    assert loc["status"] == "ok" and loc["method"] == "kernel outputs", loc
    assert loc["diverges_at"] == "stages.2.3" and loc["block"] == "stages.2.3"
    profile = {p["boundary"]: p["rel_err"] for p in loc["profile"]}
    assert {"downsample_layers.0", "stages.0.0", "stages.2.2"} <= set(profile)
    before = [e for b, e in profile.items() if b != "stages.2.3" and list(profile).index(b) < list(profile).index(
        "stages.2.3")]
    assert before and max(before) < 1e-4 < profile["stages.2.3"]


def test_tvm_localization_runs_the_bundle_itself(mutated_host_bundle):
    """The bundle's manifest names the clean ONNX: a probe that rebuilt that ONNX would find nothing."""
    loc = _localized(mutated_host_bundle, "tvm-local")
    _check_bundle_localization(loc)
    assert loc["where"] == "this machine" and loc["kernels"] > 100


def test_tvm_localization_over_rpc_calls_the_bundles_kernels_on_the_board(mutated_host_bundle, host_rpc_server,
                                                                           rpc_tracker):
    loc = _localized(mutated_host_bundle, "tvm-rpc",
                     {"rpc": f"rpc://tracker@{rpc_tracker.address}/{host_rpc_server.key}"})
    _check_bundle_localization(loc)
    assert "over RPC" in loc["where"]


def test_an_onnx_runtime_reference_knows_the_boundaries_its_export_recorded(onnx_artifact, tiny_conv2former_onnx):
    # So a model with no registered variant (the tiny net) can still be localized against ONNX Runtime.
    from c2f_edge.models import create_model
    from c2f_edge.parity.backends import make_backend

    assert make_backend("onnxruntime", str(onnx_artifact)).boundaries() == localize.boundaries(create_model("n"))
    tiny = make_backend("onnxruntime", str(tiny_conv2former_onnx)).boundaries()
    assert tiny == localize.boundaries_of_depths([1, 1, 1, 1])
    assert localize.depths_of_scopes(["stages.0.1.attn", "stages.1.0", "stem", "stages.1.2.mlp.fc1"]) == [2, 3]


def test_tvm_qemu_localization_finds_the_changed_block_of_an_arm64_bundle(tmp_path, tiny_conv2former_onnx):
    """End to end on the emulated core: an arm64 bundle built from an ONNX with one changed weight fails
    against ONNX Runtime on the clean file, and its own kernels, run one by one under qemu, put the
    divergence in the changed block."""
    import shutil
    from pathlib import Path

    from c2f_edge.board import emulator
    from c2f_edge.compile import CompileConfig, compile_bundle
    from tests.fixtures.parity import mutate_initializer

    if not shutil.which(emulator.QEMU):
        pytest.skip("qemu-aarch64-static is not installed: run `make setup-system` as root")
    clean = Path(tiny_conv2former_onnx).parent
    mutate_initializer(clean, tmp_path / "onnx", "stages.2.0.mlp.fc1.weight")
    bundle = compile_bundle(CompileConfig(target="arm64", onnx=str(tmp_path / "onnx" / "model.onnx"),
                                          tuning_log="none", out=str(tmp_path / "arm64"), verify="none"))
    result = run_parity([BackendSpec("tvm-qemu", str(bundle))], build_inputs("photos", n=1),
                        reference=BackendSpec("onnxruntime", str(clean)), quiet=True)
    (entry,) = result["backends"]
    assert entry["status"] == "fail"
    loc = entry["localization"]
    assert loc["status"] == "ok" and loc["method"] == "kernel outputs" and loc["block"] == "stages.2.0", loc
