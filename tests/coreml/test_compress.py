"""Every --compress mode gives a smaller package, and reports its size and deviation (manifest, stdout)."""

import json
import math

import pytest

from c2f_edge.coreml import check

# Upper bounds on package size / uncompressed fp16 size that follow from the bit widths alone
# (8, 4, 4 and 6 bits per weight vs 16), with headroom for scales, LUTs and the small uncompressed tensors.
MAX_RATIO = {"int8": 0.6, "int4": 0.35, "palettize4": 0.35, "palettize6": 0.45}


def _check_manifest(man, mode):
    assert man["compress"]["mode"] == mode
    sizes = man["sizes"]
    assert sizes["package_bytes"] < sizes["uncompressed_bytes"]
    assert sizes["ratio"] < MAX_RATIO[mode]
    dev = man["check"]["vs_uncompressed"]
    # Compression changes the weights, so the logits move, but stay finite and in the model's range.
    assert 0 < dev["max_abs_diff"] < math.inf
    assert man["check"]["vs_torch_fp32"]["max_abs_diff"] > 0
    assert "compress_s" in man["times"]


@pytest.mark.slow
def test_cli_int8_reports_size_and_deviation(coreml_cli_int8):
    out, rc, stdout, stderr = coreml_cli_int8
    assert rc == 0, stderr
    man = json.loads((out / "manifest.json").read_text())
    _check_manifest(man, "int8")
    assert "MB uncompressed ->" in stdout and "vs uncompressed package" in stdout
    assert "Torch version" not in stderr and "Failed to load _MLModel" not in stderr


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["int4", "palettize4"])
def test_compress_mode(coreml_compressed, mode):
    out = coreml_compressed(mode)
    man = json.loads((out / "manifest.json").read_text())
    _check_manifest(man, mode)
    prog = check.load_program(out)
    kinds = {op.op_type for op in prog.functions["main"].operations if op.op_type.startswith("constexpr_")}
    assert kinds, "a compressed program stores its weights in constexpr_* ops"
