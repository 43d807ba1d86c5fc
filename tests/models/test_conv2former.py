import hashlib
import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from c2f_edge.core.errors import UnknownVariantError
from c2f_edge.models import create_model, list_variants, variant_info

OFFICIAL = json.loads((Path(__file__).parents[1] / "data" / "official_state_dicts.json").read_text())


def names_shapes_sha(model) -> str:
    items = [f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items()]
    return hashlib.sha256("\n".join(items).encode()).hexdigest()


def test_n_state_dict_matches_official_names_and_shapes():
    sd = create_model("n").state_dict()
    expected = OFFICIAL["n_state_dict_1b3bac2"]
    assert [[k, list(v.shape)] for k, v in sd.items()] == expected
    assert len(sd) == 311
    assert sum(p.numel() for p in create_model("n").parameters()) == 15_241_672


@pytest.mark.parametrize("rev", sorted(OFFICIAL["revisions"]))
def test_every_official_variant_matches(rev):
    for name, ref in OFFICIAL["revisions"][rev].items():
        with torch.device("meta"):  # shapes only: L has 199M parameters
            model = create_model(name, kernel_size=ref["kernel_size"])
        assert len(model.state_dict()) == ref["entries"], name
        assert sum(p.numel() for p in model.parameters()) == ref["params"], name
        assert names_shapes_sha(model) == ref["names_shapes_sha256"], name


def test_registry_lists_variants_and_rejects_unknown():
    assert {"n", "t", "s", "b", "l"} <= set(list_variants())
    assert variant_info("conv2former_n").name == "n"
    with pytest.raises(UnknownVariantError) as e:
        variant_info("nn")
    assert "did you mean 'n'" in e.value.hint


def test_forward_shape_and_official_layer_scale_init():
    m = create_model("n")
    assert torch.allclose(m.stages[0][0].layer_scale_1, torch.full((64,), 1e-6))
    with torch.no_grad():
        y = m(torch.randn(2, 3, 224, 224))
    assert y.shape == (2, 1000)


def test_layernorm_is_channels_first():
    from c2f_edge.models.conv2former import LayerNorm

    ln = LayerNorm(8)
    x = torch.randn(2, 8, 5, 5) * 3 + 1
    ref = torch.nn.functional.layer_norm(x.permute(0, 2, 3, 1), (8,), eps=1e-6).permute(0, 3, 1, 2)
    assert torch.allclose(ln(x), ref, atol=1e-5)


# --- the forward pass, pinned to upstream --------------------------------------------------------------

GOLDEN = json.loads((Path(__file__).parents[1] / "data" / "golden_logits.json").read_text())
SCRIPT = Path(__file__).parents[2] / "scripts" / "golden_logits.py"


# The golden logits' weights and inputs are defined once, in the script that made the golden file.
_spec = importlib.util.spec_from_file_location("golden_logits", SCRIPT)
golden_script = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(golden_script)
seeded_state_dict = golden_script.seeded_state_dict


@pytest.mark.parametrize("key", sorted(GOLDEN["models"]))
def test_logits_match_upstream_conv2former(key):
    """Logits of the upstream HVision-NKU/Conv2Former code (commit in golden_logits.json), computed once
    outside this project with the same seeded weights and inputs. Every backend is compared with our
    torch model, so this is what keeps that model the paper's: a dropped GELU, a reordered residual or
    another norm fails here."""
    want = GOLDEN["models"][key]
    model = create_model("n", kernel_size=want["kernel_size"])
    sd = seeded_state_dict({k: tuple(v.shape) for k, v in model.state_dict().items()})
    model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    with torch.no_grad():
        got = model(torch.from_numpy(golden_script.inputs())).numpy()
    ref = np.asarray(want["logits"], np.float32)
    assert got.shape == ref.shape == (2, 1000)
    assert np.abs(got - ref).max() <= 1e-5, f"max abs diff {np.abs(got - ref).max():.3g} from upstream"


def test_golden_logits_depend_on_every_block():
    """The golden weights make each block matter (with the official 1e-6 layer scales they would not)."""
    model = create_model("n", kernel_size=11)
    sd = seeded_state_dict({k: tuple(v.shape) for k, v in model.state_dict().items()})
    sd["stages.2.3.layer_scale_1"][:] = 0.0
    model.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()}, strict=True)
    x = np.random.default_rng(1234).standard_normal((2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        got = model(torch.from_numpy(x)).numpy()
    ref = np.asarray(GOLDEN["models"]["n_k11"]["logits"], np.float32)
    assert np.abs(got - ref).max() > 0.05 * np.abs(ref).max()


# Our model behind upstream's API and imports: numbers made from it equal upstream's today.
STAND_IN = """from timm.models.layers import DropPath, trunc_normal_
from timm.models.registry import register_model
from timm.models.vision_transformer import _cfg

from c2f_edge.models import create_model


def Conv2Former(kernel_size, **kwargs):
    return create_model("n", kernel_size=kernel_size)


@register_model
def conv2former_n(pretrained=False, **kwargs):
    return create_model("n", kernel_size=7)
"""


def test_golden_logits_made_from_our_own_model_are_told_apart_by_the_file_they_name(tmp_path, capsys):
    """The provenance names upstream's file by its sha256 (and the script that made them). Numbers
    regenerated from our model instead come out the same, so only that hash tells them apart: the
    script's --check refuses them, and the hash it records is not upstream's."""
    prov = GOLDEN["provenance"]
    assert prov["script"] == "scripts/golden_logits.py" and (SCRIPT.parents[1] / prov["script"]).is_file()
    assert len(prov["file_sha256"]) == 64 and prov["repo"] == "HVision-NKU/Conv2Former" and len(prov["commit"]) == 40
    fake = tmp_path / "models" / "conv2former.py"
    fake.parent.mkdir()
    fake.write_text(STAND_IN)
    made = golden_script.golden(tmp_path)
    for key, want in GOLDEN["models"].items():
        assert np.abs(np.asarray(made["models"][key]["logits"]) - np.asarray(want["logits"])).max() <= 1e-5, key
    assert made["provenance"]["file_sha256"] == hashlib.sha256(STAND_IN.encode()).hexdigest() != prov["file_sha256"]
    assert golden_script.main(["--upstream", str(tmp_path), "--check"]) == 1
    assert "upstream file DIFFERENT" in capsys.readouterr().out


@pytest.mark.skipif(not os.environ.get("C2F_EDGE_UPSTREAM"),
                    reason="no upstream checkout here (no internet at test time); set C2F_EDGE_UPSTREAM to a "
                           "clone of HVision-NKU/Conv2Former at the recorded commit to regenerate and compare")
def test_upstream_regenerates_the_golden_logits():
    assert golden_script.main(["--upstream", os.environ["C2F_EDGE_UPSTREAM"], "--check"]) == 0
