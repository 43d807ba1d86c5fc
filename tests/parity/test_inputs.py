import numpy as np
import pytest

from c2f_edge.core.errors import ArtifactError, UsageError
from c2f_edge.parity.inputs import activation_peak, build_inputs, stress


def test_photos_are_normalized_imagenet_crops():
    s = build_inputs("photos", n=2)
    assert s.x.shape == (2, 3, 224, 224) and s.x.dtype == np.float32
    assert s.names == ["astronaut", "chelsea"]
    # ImageNet normalization of 0..255 pixels lands in [-2.12, 2.64]
    assert -2.2 < s.x.min() < -1.0 and 1.5 < s.x.max() < 2.7
    assert not s.x.flags.writeable  # shared by all backends: none may modify it


def test_random_is_seeded():
    a, b, c = build_inputs("random", n=2, seed=1), build_inputs("random", n=2, seed=1), build_inputs("random", n=2)
    assert np.array_equal(a.x, b.x) and not np.array_equal(a.x, c.x)


def test_sets_combine():
    s = build_inputs(["photos", "random"], n=1)
    assert s.names == ["photos/astronaut", "random/normal_seed0_0"] and len(s.x) == 2


def test_unknown_set_is_a_usage_error():
    with pytest.raises(UsageError, match="unknown input set"):
        build_inputs("imagenet")


def test_own_images_and_undecodable_ones(tmp_path):
    import skimage.io

    from c2f_edge.core.images import sample_photos

    skimage.io.imsave(tmp_path / "cat.png", sample_photos(2)["chelsea"])
    s = build_inputs("photos", images=str(tmp_path))
    assert s.names == ["cat.png"] and s.x.shape == (1, 3, 224, 224)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(ArtifactError, match="cannot decode image") as e:
        build_inputs("photos", images=str(tmp_path))
    assert "broken.jpg" in str(e.value) and e.value.hint
    with pytest.raises(ArtifactError, match="not found"):
        build_inputs("photos", images=str(tmp_path / "nope"))


def test_stress_inputs_run_hotter_than_photos():
    from tests.fixtures.coreml import tiny_model

    model, _ = tiny_model()
    photo = build_inputs("photos", n=1, size=64).x[0]
    s = stress(n=1, model=model, size=64)
    assert s.names == ["hot_photo"]
    # valid pixels: still inside the normalized 0..255 range
    assert s.x.min() >= -2.2 and s.x.max() <= 2.7
    assert activation_peak(model, s.x[0]) > 1.5 * activation_peak(model, photo)
