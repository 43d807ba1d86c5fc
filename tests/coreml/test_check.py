"""Backend selection of the package check: MLModel.predict on macOS, the NumPy interpreter elsewhere."""

import sys

import pytest

from c2f_edge.core.errors import ArtifactError, UnsupportedError, UsageError
from c2f_edge.coreml.check import resolve_package, select_backend


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
