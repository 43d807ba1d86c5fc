"""Conv2Former-N -> .mlpackage (fp32, fp16, image input), checked by reading the saved program back."""

import json

import numpy as np
import pytest
import torch

from c2f_edge.core.artifacts import IMAGENET_MEAN, IMAGENET_STD
from c2f_edge.core.images import normalize
from c2f_edge.coreml import check
from c2f_edge.coreml._ct import ct
from c2f_edge.coreml.convert import STEM_CONV, fold_normalization
from c2f_edge.models.conv2former import Block


def _torch_logits(model, img):
    with torch.no_grad():
        return model(torch.from_numpy(normalize(img)[None])).numpy()


def _spec(out_dir):
    return ct().models.MLModel(str(out_dir / "model.mlpackage"), skip_model_load=True).get_spec()


def test_std_fold_is_exact_including_borders():
    """The reasoning behind the image input, in float64 torch: conv(W/std, pad(p/255 - mean)) equals
    conv(W, pad((p/255 - mean)/std)) everywhere, borders included; folding the mean too would not be."""
    from c2f_edge.core.images import sample_photos
    from tests.fixtures.coreml import tiny_model

    model = tiny_model()[0].double()  # float64 throughout, so any difference would be the method's, not rounding
    folded = fold_normalization(model)
    conv, fconv = (m.get_submodule(STEM_CONV) for m in (model, folded))
    img = sample_photos(2, size=64)["chelsea"].astype(np.float64)
    mean, std = (torch.tensor(v, dtype=torch.float64)[None, :, None, None] for v in (IMAGENET_MEAN, IMAGENET_STD))
    p = torch.from_numpy(img.transpose(2, 0, 1)[None] / 255.0)
    ref = conv((p - mean) / std)
    got = fconv(p - mean)
    assert torch.allclose(got, ref, atol=1e-12, rtol=0)
    # Had the mean been folded into a conv bias as well, the zero padding would sit at raw 0, not at the mean:
    w = conv.weight
    bias = -(w * (mean / std)).sum(dim=(1, 2, 3))
    both = torch.nn.functional.conv2d(p / std, w, bias, stride=conv.stride, padding=conv.padding)
    border_err = (both - ref)[..., 0, :].abs().max()
    interior_err = (both - ref)[..., 1:-1, 1:-1].abs().max()
    assert interior_err < 1e-12 and border_err > 1e-3
    assert model.get_submodule(STEM_CONV).weight is not folded.get_submodule(STEM_CONV).weight


@pytest.mark.slow
def test_fp32_package_matches_torch(coreml_fp32, coreml_model_n, coreml_photos):
    model, _ = coreml_model_n
    for name, img in coreml_photos.items():
        got = check.run_package(coreml_fp32, normalize(img)[None], mode="fp32")
        ref = _torch_logits(model, img)
        assert got.shape == (1, 1000) and got.dtype == np.float32
        assert np.abs(got - ref).max() < 1e-4, name


@pytest.mark.slow
def test_fp32_package_metadata_and_manifest(coreml_fp32):
    spec = _spec(coreml_fp32)
    meta = spec.description.metadata
    assert "Conv2Former-N" in meta.shortDescription and meta.author and meta.license and meta.versionString
    assert spec.description.input[0].name == "input" and spec.description.input[0].shortDescription
    out = spec.description.output[0]
    assert out.name == "logits" and out.shortDescription
    assert out.type.multiArrayType.dataType == ct().proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32
    assert meta.userDefined["com.c2f-edge.weights"] == "synthetic"
    assert spec.WhichOneof("Type") == "mlProgram"
    man = json.loads((coreml_fp32 / "manifest.json").read_text())
    assert man["kind"] == "coreml" and man["precision"] == "fp32" and man["ios"] == 17
    assert man["sizes"]["package_bytes"] > 50e6  # 15.2M fp32 params
    assert not list(coreml_fp32.parent.glob(".fp32.tmp-*"))


@pytest.mark.slow
def test_fp16_package_agrees_on_top1(coreml_fp16, coreml_model_n, coreml_photos):
    model, _ = coreml_model_n
    spec = _spec(coreml_fp16)
    assert spec.description.output[0].type.multiArrayType.dataType == \
        ct().proto.FeatureTypes_pb2.ArrayFeatureType.FLOAT32  # fp32 out, whatever the compute precision
    man = json.loads((coreml_fp16 / "manifest.json").read_text())
    assert man["sizes"]["package_bytes"] < 0.6 * 61e6
    for name, img in coreml_photos.items():
        got = check.run_package(coreml_fp16, normalize(img)[None], mode="fp16")
        ref = _torch_logits(model, img)
        assert int(np.argmax(got)) == int(np.argmax(ref)), name
        assert np.abs(got - ref).max() < 0.05 * np.abs(ref).max(), name


@pytest.mark.slow
def test_image_input_matches_torch_normalize(coreml_image_fp32, coreml_model_n, coreml_photos):
    model, _ = coreml_model_n
    spec = _spec(coreml_image_fp32)
    assert spec.description.input[0].type.WhichOneof("Type") == "imageType"
    for name, img in coreml_photos.items():
        got = check.run_package(coreml_image_fp32, img, mode="fp32")  # raw uint8 pixels in
        ref = _torch_logits(model, img)
        assert np.abs(got - ref).max() < 1e-4, name


@pytest.mark.slow
def test_corrupted_weight_is_caught(coreml_fp32, coreml_photos, tmp_path):
    import shutil

    bad = tmp_path / "model.mlpackage"
    shutil.copytree(coreml_fp32 / "model.mlpackage", bad)
    weights = bad / check.WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    mid = len(data) // 2 & ~3
    data[mid:mid + 16384] = np.full(4096, 2.0, np.float32).tobytes()  # 4096 weights set to 2.0 (finite)
    weights.write_bytes(bytes(data))
    x = normalize(next(iter(coreml_photos.values())))[None]
    good = check.run_package(coreml_fp32, x, mode="fp32")
    corrupt = check.run_package(bad, x, mode="fp32")
    assert np.isfinite(corrupt).all()
    assert np.abs(good - corrupt).max() > 1e-2  # 100x the fp32 parity tolerance


@pytest.mark.slow
def test_intermediates_map_back_to_torch_modules(coreml_fp32, coreml_model_n, coreml_photos):
    """Block outputs, looked up by torch module name in the manifest, match torch's forward hooks."""
    model, _ = coreml_model_n
    mapping = check.module_map(coreml_fp32)
    blocks = [n for n, m in model.named_modules() if isinstance(m, Block)]
    assert set(blocks) <= set(mapping), sorted(set(blocks) - set(mapping))
    assert mapping["pred"] == "logits"  # the classifier's output is the program output
    seen = {}
    hooks = [model.get_submodule(n).register_forward_hook(
        lambda m, i, o, n=n: seen.__setitem__(n, o.detach().numpy())) for n in blocks]
    img = coreml_photos["chelsea"]
    try:
        _torch_logits(model, img)
    finally:
        for h in hooks:
            h.remove()
    _, inter = check.run_package(coreml_fp32, normalize(img)[None], return_intermediates=[mapping[n] for n in blocks])
    for n in blocks:
        assert np.abs(inter[mapping[n]] - seen[n]).max() < 1e-3 * max(1.0, np.abs(seen[n]).max()), n
