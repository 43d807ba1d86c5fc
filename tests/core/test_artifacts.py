"""Artifact directories are replaced whole: never merged with the old one, nothing left beside them."""

import json

import pytest

from c2f_edge.core.artifacts import MANIFEST, atomic_dir
from c2f_edge.core.errors import UsageError


def _write(d, files: dict) -> None:
    (d / MANIFEST).write_text(json.dumps({"kind": "test"}))
    for name, text in files.items():
        (d / name).write_text(text)


def _siblings(final):
    return sorted(p.name for p in final.parent.iterdir() if p.name != final.name)


def test_a_new_artifact_replaces_the_old_one_whole(tmp_path):
    final = tmp_path / "bundle"
    with atomic_dir(final) as tmp:
        _write(tmp, {"model.so": "old", "only-old.txt": "x"})
    with atomic_dir(final) as tmp:
        assert final.is_dir() and tmp != final  # the old one stays in place while the new one is written
        _write(tmp, {"model.so": "new"})
    assert sorted(p.name for p in final.iterdir()) == [MANIFEST, "model.so"]  # not merged
    assert (final / "model.so").read_text() == "new"
    assert _siblings(final) == []  # no .tmp-* or .old-* directory left


def test_a_failed_step_keeps_the_old_artifact_and_leaves_nothing(tmp_path):
    final = tmp_path / "bundle"
    with atomic_dir(final) as tmp:
        _write(tmp, {"model.so": "old"})
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        _write(tmp, {"model.so": "half"})
        raise RuntimeError("the link failed")
    assert (final / "model.so").read_text() == "old"
    assert _siblings(final) == []


def test_only_a_c2f_edge_directory_is_replaced(tmp_path):
    final = tmp_path / "mine"
    final.mkdir()
    (final / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not a c2f-edge artifact directory"), atomic_dir(final):
        pass
    assert (final / "notes.txt").read_text() == "keep me" and _siblings(final) == []


def _tiny_onnx_export(d):
    """An ONNX file with an export manifest beside it that records its sha256."""
    import onnx
    from onnx import TensorProto, helper

    from c2f_edge.core.artifacts import sha256_file

    graph = helper.make_graph([helper.make_node("Relu", ["input"], ["logits"])], "tiny",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 4])])
    d.mkdir()
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)]), str(d / "model.onnx"))
    (d / MANIFEST).write_text(json.dumps({"kind": "onnx", "files": {"model.onnx": {
        "sha256": sha256_file(d / "model.onnx")}}}))
    return d / "model.onnx"


def test_a_changed_onnx_file_is_refused_unless_the_check_is_off(tmp_path, monkeypatch):
    from c2f_edge.core.artifacts import VERIFY_HASH_ENV
    from c2f_edge.core.errors import ArtifactError
    from c2f_edge.core.onnx_file import load_onnx

    path = _tiny_onnx_export(tmp_path / "onnx")
    load_onnx(path)  # as exported: loads
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one bit of the graph's last byte: still a loadable model, not the one exported
    path.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="model.onnx does not match its manifest"):
        load_onnx(path, check=False)
    monkeypatch.setenv(VERIFY_HASH_ENV, "0")  # what --no-verify-hash sets
    load_onnx(path, check=False)
    (tmp_path / "onnx" / MANIFEST).unlink()
    monkeypatch.delenv(VERIFY_HASH_ENV)
    load_onnx(path, check=False)  # an ONNX file from elsewhere: nothing recorded, nothing to check


def test_a_changed_mlpackage_is_refused(tmp_path):
    from c2f_edge.core.artifacts import sha256_tree
    from c2f_edge.core.errors import ArtifactError
    from c2f_edge.coreml.check import _check_against_manifest

    pkg = tmp_path / "model.mlpackage"
    (pkg / "Data").mkdir(parents=True)
    (pkg / "Data" / "weight.bin").write_bytes(b"\0" * 64)
    (tmp_path / MANIFEST).write_text(json.dumps({"package_sha256": sha256_tree(pkg)}))
    _check_against_manifest(pkg)
    (pkg / "Data" / "weight.bin").write_bytes(b"\0" * 63 + b"\1")
    with pytest.raises(ArtifactError, match="model.mlpackage does not match its manifest"):
        _check_against_manifest(pkg)
