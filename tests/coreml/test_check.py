"""Backend selection of the package check: MLModel.predict on macOS, the NumPy interpreter elsewhere."""

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from c2f_edge.core.errors import ArtifactError, UnsupportedError, UsageError
from c2f_edge.coreml.check import resolve_package, run_package, select_backend


def test_auto_picks_predict_only_on_macos_with_runtime():
    assert select_backend("auto", platform="darwin", runtime=True) == "coreml"
    assert select_backend("auto", platform="darwin", runtime=False) == "numpy"
    assert select_backend("auto", platform="linux", runtime=True) == "numpy"
    assert select_backend("numpy", platform="darwin", runtime=True) == "numpy"
    assert select_backend("coreml", platform="darwin", runtime=True) == "coreml"


def test_predict_off_macos_is_a_clear_error():
    with pytest.raises(UnsupportedError, match="macOS"):
        select_backend("coreml", platform="linux", runtime=False)
    with pytest.raises(UsageError, match="tflite"):
        select_backend("tflite")


def test_this_machine_uses_the_interpreter_off_macos():
    if sys.platform == "darwin":
        pytest.skip("on macOS the auto backend depends on the installed Core ML runtime")
    assert select_backend() == "numpy"


def test_not_a_package(tmp_path):
    with pytest.raises(ArtifactError, match="not an .mlpackage"):
        resolve_package(tmp_path)


@pytest.mark.skipif(sys.platform != "darwin", reason="MLModel.predict needs macOS with the Core ML runtime")
@pytest.mark.slow
def test_predict_matches_interpreter_on_macos(coreml_fp32, coreml_photos):
    import numpy as np

    from c2f_edge.core.images import normalize
    from c2f_edge.coreml.check import run_package

    x = normalize(coreml_photos["astronaut"])[None]
    mac = run_package(coreml_fp32, x, mode="fp32", backend="coreml")
    ours = run_package(coreml_fp32, x, mode="fp32", backend="numpy")
    assert np.abs(mac - ours).max() < 1e-3


def _changed_copy(src: Path, dst: Path) -> Path:
    """A copy of a package directory with one byte of its weights changed, its manifest left as built."""
    shutil.copytree(src, dst)
    (weights,) = (dst / "model.mlpackage").rglob("weight.bin")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    return dst


def test_a_package_changed_after_build_is_refused_by_the_check(coreml_tiny, tmp_path, monkeypatch):
    # The manifest that build_package wrote, read by the path every check takes (parity, the CLI's check):
    # breaks if the check is dropped from check.py, or if convert.py records the hash under another key.
    from c2f_edge.core.artifacts import VERIFY_HASH_ENV

    x = np.zeros((1, 3, 224, 224), np.float32)
    assert np.all(np.isfinite(run_package(coreml_tiny, x, backend="numpy")))
    changed = _changed_copy(coreml_tiny, tmp_path / "changed")
    with pytest.raises(ArtifactError, match=r"^model.mlpackage does not match its manifest"):
        run_package(changed, x, backend="numpy")
    monkeypatch.setenv(VERIFY_HASH_ENV, "0")  # --no-verify-hash: the user changed it on purpose
    run_package(changed, x, backend="numpy")


def test_a_core_ml_manifest_without_the_hash_is_refused(coreml_tiny, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(coreml_tiny, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    del manifest["package_sha256"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="records no package_sha256"):
        run_package(copy, np.zeros((1, 3, 224, 224), np.float32), backend="numpy")
