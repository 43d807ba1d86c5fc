import numpy as np
import pytest

from c2f_edge.board.remote import open_session, parse_rpc
from c2f_edge.core.errors import ArtifactError, RemoteError, UsageError
from c2f_edge.parity import backends


def test_registry_names_the_backends():
    assert {"torch", "onnxruntime", "tvm-local", "tvm-rpc", "coreml"} <= set(backends.list_backends())


def test_unknown_backend_suggests_one():
    with pytest.raises(UsageError) as e:
        backends.get_backend("onnxrutime")
    assert "did you mean 'onnxruntime'" in e.value.hint


def test_backends_get_only_plain_options(tmp_path):
    # Structural guard: no reference outputs, arrays or models can be handed to a backend.
    for leak in (np.zeros(3), object(), [1.0]):
        with pytest.raises(UsageError, match="must be a string or number"):
            backends.make_backend("onnxruntime", tmp_path, {"reference": leak})


def test_backend_interface_has_no_reference_channel():
    import inspect

    for cls in backends.BACKENDS.values():
        assert list(inspect.signature(cls.__init__).parameters) == ["self", "artifact", "options"]
        assert list(inspect.signature(cls.run).parameters) == ["self", "x"]


def test_missing_artifacts_are_artifact_errors(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        backends.backend_for_artifact(tmp_path / "missing")
    with pytest.raises(ArtifactError, match="ONNX file not found"):
        backends.make_backend("onnxruntime", tmp_path / "missing")
    with pytest.raises(ArtifactError, match="TVM bundle not found"):
        backends.make_backend("tvm-local", tmp_path / "missing")
    with pytest.raises(ArtifactError, match="not an .mlpackage"):
        backends.make_backend("coreml", tmp_path / "missing")
    (tmp_path / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(ArtifactError, match="not a valid ONNX model"):
        backends.make_backend("onnxruntime", tmp_path)


def test_rpc_addresses():
    assert parse_rpc("rpc://10.0.0.5:9090").kind == "direct"
    a = parse_rpc("rpc://tracker@127.0.0.1:9190/rk3588")
    assert (a.kind, a.host, a.port, a.key) == ("tracker", "127.0.0.1", 9190, "rk3588")
    assert parse_rpc("emulated").kind == "emulated"
    for bad in ("10.0.0.5:9090", "rpc://host", "rpc://tracker@h:1", "http://h:1"):
        with pytest.raises(UsageError, match="bad RPC address"):
            parse_rpc(bad)


def test_unreachable_rpc_is_a_remote_error():
    from c2f_edge.board.rpc import free_port

    port = free_port()  # nothing listens there
    with pytest.raises(RemoteError, match=f"cannot reach RPC server at 127.0.0.1:{port}") as e:
        open_session(f"rpc://127.0.0.1:{port}", timeout=2)
    assert e.value.hint
    with pytest.raises(RemoteError, match="cannot reach RPC tracker"):
        open_session(f"rpc://tracker@127.0.0.1:{port}/rk3588", timeout=2)
