import json

import numpy as np
import onnx
import pytest
import torch

from c2f_edge.core.errors import ArtifactError, OutputMismatchError
from c2f_edge.core.images import batch, sample_photos
from c2f_edge.core.onnx_file import load_onnx
from c2f_edge.export import ExportConfig, export_onnx
from c2f_edge.export import stage as export_mod


def test_export_writes_one_checked_simplified_file(onnx_artifact):
    files = sorted(p.name for p in onnx_artifact.iterdir())
    # no .onnx.data sidecar, no temp leftovers; scopes.json maps modules to tensors for parity
    assert files == ["manifest.json", "model.onnx", "scopes.json"]
    onnx.checker.check_model(str(onnx_artifact / "model.onnx"))
    m = json.loads((onnx_artifact / "manifest.json").read_text())
    assert m["nodes"]["after_simplify"] < m["nodes"]["before_simplify"]
    model = onnx.load(str(onnx_artifact / "model.onnx"))
    assert len(model.graph.node) == m["nodes"]["after_simplify"]
    assert [i.name for i in model.graph.input] == ["input"]
    assert [o.name for o in model.graph.output] == ["logits"]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def test_manifest_records_what_made_it(onnx_artifact, synthetic_model):
    from c2f_edge.core.artifacts import sha256_file
    from c2f_edge.models.weights import state_dict_sha256

    m = json.loads((onnx_artifact / "manifest.json").read_text())
    assert m["kind"] == "onnx" and m["variant"] == "n" and m["opset"] == 20
    assert m["weights"] == {"kind": "synthetic", "sha256": state_dict_sha256(synthetic_model.state_dict()),
                            "seed": 0}
    assert m["input"]["shape"] == [1, 3, 224, 224] and m["input"]["dtype"] == "float32"
    assert m["input"]["normalization"]["mean"] == [0.485, 0.456, 0.406]
    assert m["files"]["model.onnx"]["sha256"] == sha256_file(onnx_artifact / "model.onnx")
    assert m["versions"]["torch"].startswith("2.13.0") and m["versions"]["onnxsim"]
    p = m["parity"]["onnxruntime_vs_torch"]
    assert p["max_abs_diff"] <= 1e-4 and p["top1_agreement"] == 1.0 and p["n_inputs"] >= 3


def test_onnxruntime_matches_torch_on_real_photos(onnx_artifact, synthetic_model):
    import onnxruntime as ort

    x = batch(sample_photos(4))
    sess = ort.InferenceSession(str(onnx_artifact / "model.onnx"), providers=["CPUExecutionProvider"])
    out = np.concatenate([sess.run(None, {"input": x[i:i + 1]})[0] for i in range(len(x))])
    with torch.no_grad():
        ref = synthetic_model(torch.from_numpy(x)).numpy()
    assert np.abs(out - ref).max() <= 1e-4
    assert (out.argmax(1) == ref.argmax(1)).all()
    assert np.abs(ref).max() > 0.5  # logits are not degenerate


def test_graph_signature_ignores_weights_but_not_structure(onnx_artifact):
    from c2f_edge.core.onnx_file import graph_signature

    model = onnx.load(str(onnx_artifact / "model.onnx"))
    sig = graph_signature(model)
    init = model.graph.initializer[0]
    arr = onnx.numpy_helper.to_array(init).copy() + 1
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    assert graph_signature(model) == sig
    model.graph.node.pop()
    assert graph_signature(model) != sig


def test_simplification_that_changes_outputs_is_an_error(tmp_path, monkeypatch, synthetic_model):
    real = export_mod._simplify

    def broken(model):
        out = real(model)
        big = max(out.graph.initializer, key=lambda t: np.prod(t.dims))
        arr = onnx.numpy_helper.to_array(big).copy()
        arr.flat[0] += 10.0
        big.CopyFrom(onnx.numpy_helper.from_array(arr, big.name))
        return out

    monkeypatch.setattr(export_mod, "_simplify", broken)
    out = tmp_path / "onnx"
    with pytest.raises(OutputMismatchError, match="onnxsim changed the outputs"):
        export_onnx(ExportConfig(weights="synthetic", out=str(out)), model=synthetic_model,
                     source=_source())
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []  # the temp dir is gone too


def test_onnx_runtime_that_disagrees_with_pytorch_is_an_error(tmp_path, monkeypatch, synthetic_model):
    """ONNX Runtime's logits off by 1e-2 (the raw and the simplified graph alike, so onnxsim's own check
    passes): the export fails on the ORT-vs-PyTorch check and writes nothing."""
    real = export_mod.run_ort
    monkeypatch.setattr(export_mod, "run_ort", lambda sess, x: real(sess, x) + np.float32(1e-2))
    out = tmp_path / "onnx"
    with pytest.raises(OutputMismatchError, match="ONNX Runtime disagrees with PyTorch: max_abs_diff 0.01"):
        export_onnx(ExportConfig(weights="synthetic", out=str(out)), model=synthetic_model, source=_source())
    assert list(tmp_path.iterdir()) == []


def _source():
    from c2f_edge.models.weights import WeightsSource

    return WeightsSource("synthetic", "0" * 64, seed=0)


@pytest.mark.slow
def test_dynamic_batch_export_runs_batches(tmp_path, synthetic_model):
    import onnxruntime as ort

    out = tmp_path / "dyn"
    export_onnx(ExportConfig(weights="synthetic", dynamic_batch=True, out=str(out), parity_inputs=1),
                model=synthetic_model, source=_source())
    m = json.loads((out / "manifest.json").read_text())
    assert m["input"]["shape"][0] == "batch"
    x = batch(sample_photos(3))
    got = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.no_grad():
        ref = synthetic_model(torch.from_numpy(x)).numpy()
    assert got.shape == (3, 1000) and np.abs(got - ref).max() <= 1e-4


def test_load_onnx_rejects_missing_and_corrupt(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        load_onnx(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(ArtifactError, match="not a valid ONNX model"):
        load_onnx(bad)


def test_ensure_onnx_takes_a_given_file_and_refuses_a_missing_one(tmp_path):
    from c2f_edge.core.errors import ArtifactError
    from c2f_edge.export import ensure_onnx

    (tmp_path / "m.onnx").write_bytes(b"x")
    assert ensure_onnx(str(tmp_path / "m.onnx")) == tmp_path / "m.onnx"
    with pytest.raises(ArtifactError, match="nope.onnx not found"):
        ensure_onnx(str(tmp_path / "nope.onnx"))  # only the default is exported when missing
