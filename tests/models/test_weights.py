import pytest
import torch

from c2f_edge.core.errors import CheckpointError
from c2f_edge.core.images import batch, sample_photos
from c2f_edge.models import create_model
from c2f_edge.models.weights import load_model, synthesize_weights


@pytest.fixture(scope="module")
def synthetic():
    return load_model("n", weights="synthetic", seed=0)


@pytest.fixture(scope="module")
def photos():
    # 160 px keeps the 28 forward passes below cheap; the model is fully convolutional.
    return torch.from_numpy(batch(sample_photos(3, size=160)))


def test_synthetic_weights_are_deterministic(synthetic):
    _, a = synthetic
    _, b = load_model("n", weights="synthetic", seed=0)
    _, c = load_model("n", weights="synthetic", seed=1)
    assert a.sha256 == b.sha256 != c.sha256
    assert a.kind == "synthetic" and a.seed == 0


def test_synthetic_weights_are_not_near_identity(synthetic):
    model, _ = synthetic
    for stage in model.stages:
        for block in stage:
            assert 0.1 <= block.layer_scale_1.min() and block.layer_scale_1.max() <= 1.0
    bn = model.downsample_layers[0][2]
    assert bn.running_var.std() > 0.1 and bn.running_mean.abs().mean() > 0.05


def test_every_block_branch_changes_the_logits(synthetic, photos):
    """Zeroing any one residual branch must move the logits clearly: otherwise parity checks check nothing."""
    model, _ = synthetic
    with torch.no_grad():
        ref = model(photos)
        for i, stage in enumerate(model.stages):
            for j, block in enumerate(stage):
                for name in ("layer_scale_1", "layer_scale_2"):
                    p = getattr(block, name)
                    saved = p.clone()
                    p.zero_()
                    out = model(photos)
                    p.copy_(saved)
                    rel = ((out - ref).norm() / ref.norm()).item()
                    assert rel > 0.05, f"stages.{i}.{j}.{name}: relative change {rel:.4f}"


def test_synthetic_top1_varies_across_photos(synthetic, photos):
    model, _ = synthetic
    with torch.no_grad():
        assert len(set(model(photos).argmax(1).tolist())) > 1


def _save(obj, path):
    torch.save(obj, path)
    return path


@pytest.mark.parametrize("wrap", [None, "model", "state_dict", "state_dict_ema"])
@pytest.mark.parametrize("prefix", ["", "module."])
def test_checkpoint_wrappers_and_prefix_load(tmp_path, synthetic, wrap, prefix):
    model, _ = synthetic
    sd = {prefix + k: v for k, v in model.state_dict().items()}
    obj = {wrap: sd, "epoch": 3} if wrap else sd
    loaded, source = load_model("n", checkpoint=_save(obj, tmp_path / "c.pth"))
    assert source.kind == "checkpoint" and source.wrapper == wrap and len(source.sha256) == 64
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_timm_style_checkpoint_with_args_namespace_loads(tmp_path, synthetic):
    import argparse

    model, _ = synthetic
    obj = {"state_dict": model.state_dict(), "args": argparse.Namespace(lr=1e-3), "epoch": 300}
    _, source = load_model("n", checkpoint=_save(obj, tmp_path / "timm.pth.tar"))
    assert source.wrapper == "state_dict"


def test_upstream_7x7_n_checkpoint_loads_with_inferred_kernel(tmp_path):
    official_7 = synthesize_weights(create_model("n", kernel_size=7))
    loaded, _ = load_model("n", checkpoint=_save(official_7.state_dict(), tmp_path / "n7.pth"))
    assert loaded.kernel_size == 7
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(loaded(x), official_7(x))


def test_wrong_variant_checkpoint_lists_shape_mismatches(tmp_path):
    sd = create_model("t").state_dict()
    with pytest.raises(CheckpointError) as e:
        load_model("n", checkpoint=_save(sd, tmp_path / "t.pth"))
    msg = str(e.value)
    assert "Conv2Former-N" in msg and "unexpected" in msg and "shape mismatch" in msg
    assert "\n" not in msg and "+" in msg  # first few listed, the rest counted
    assert "--variant" in e.value.hint


def test_missing_and_unexpected_keys_are_named(tmp_path, synthetic):
    model, _ = synthetic
    sd = dict(model.state_dict())
    sd.pop("pred.weight")
    sd["extra.thing"] = torch.zeros(1)
    with pytest.raises(CheckpointError, match=r"1 missing: pred\.weight.*1 unexpected: extra\.thing"):
        load_model("n", checkpoint=_save(sd, tmp_path / "bad.pth"))


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all" * 10, b"PK\x03\x04garbage"])
def test_corrupt_checkpoint_is_a_checkpoint_error(tmp_path, content):
    p = tmp_path / "corrupt.pth"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_model("n", checkpoint=p)


def test_truncated_checkpoint_is_a_checkpoint_error(tmp_path, synthetic):
    model, _ = synthetic
    p = _save(model.state_dict(), tmp_path / "full.pth")
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    with pytest.raises(CheckpointError):
        load_model("n", checkpoint=p)


def test_non_tensor_payload_is_rejected(tmp_path):
    with pytest.raises(CheckpointError, match="holds no state_dict"):
        load_model("n", checkpoint=_save({"model": [1, 2, 3]}, tmp_path / "x.pth"))
