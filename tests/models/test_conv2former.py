import hashlib
import json
from pathlib import Path

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
