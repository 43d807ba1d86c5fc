import numpy as np
import pytest

from c2f_edge.core.errors import ArtifactError
from c2f_edge.core.images import SKIMAGE_PHOTOS, load_images_dir, normalize, sample_photos


def test_every_bundled_photo_loads_as_an_eval_crop():
    photos = sample_photos()
    assert list(photos) == list(SKIMAGE_PHOTOS)
    for name, img in photos.items():
        assert img.shape == (224, 224, 3) and img.dtype == np.uint8, name
        assert img.std() > 10, name  # a real picture, not a flat fill
    assert not np.array_equal(photos["motorcycle_left"], photos["motorcycle_right"])


def test_normalize_matches_imagenet_formula():
    img = np.full((4, 4, 3), 255, np.uint8)
    x = normalize(img)
    assert x.shape == (3, 4, 4)
    np.testing.assert_allclose(x[:, 0, 0], (1 - np.array([0.485, 0.456, 0.406])) / np.array([0.229, 0.224, 0.225]),
                               rtol=1e-6)


def test_images_dir_errors(tmp_path):
    with pytest.raises(ArtifactError, match="no images"):
        load_images_dir(tmp_path)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ArtifactError, match="cannot decode image"):
        load_images_dir(tmp_path)
