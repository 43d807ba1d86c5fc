"""Real test images with no download (scikit-image ships photographs) and ImageNet-eval preprocessing."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from c2f_edge.core.artifacts import IMAGENET_MEAN, IMAGENET_STD
from c2f_edge.core.errors import ArtifactError, MissingDependencyError, first_line

# Colour photographs shipped inside the scikit-image wheel: name -> (loader, index into a tuple result).
_PHOTO_SOURCES = {
    "astronaut": ("astronaut", None),
    "chelsea": ("chelsea", None),
    "coffee": ("coffee", None),
    "rocket": ("rocket", None),
    "motorcycle_left": ("stereo_motorcycle", 0),
    "motorcycle_right": ("stereo_motorcycle", 1),
}
SKIMAGE_PHOTOS = tuple(_PHOTO_SOURCES)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def _skimage():
    try:
        import skimage.data
        import skimage.transform
    except ImportError as e:
        raise MissingDependencyError("scikit-image is not installed", hint="pip install scikit-image") from e
    return skimage


def center_crop_uint8(img: np.ndarray, resize: int = 256, crop: int = 224) -> np.ndarray:
    """ImageNet eval geometry on an HxWx3 uint8 image: resize the short side, center-crop. Returns uint8."""
    sk = _skimage()
    if img.ndim == 2:
        img = np.stack([img] * 3, axis=-1)
    img = img[..., :3]
    h, w = img.shape[:2]
    s = resize / min(h, w)
    nh, nw = max(crop, round(h * s)), max(crop, round(w * s))
    resized = sk.transform.resize(img, (nh, nw), order=1, anti_aliasing=True, preserve_range=True)
    top, left = (nh - crop) // 2, (nw - crop) // 2
    out = resized[top:top + crop, left:left + crop]
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def normalize(img_uint8: np.ndarray) -> np.ndarray:
    """HxWx3 uint8 -> 3xHxW float32 with ImageNet mean/std."""
    x = img_uint8.astype(np.float32) / 255.0
    x = (x - np.asarray(IMAGENET_MEAN, np.float32)) / np.asarray(IMAGENET_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def sample_photos(n: int | None = None, size: int = 224) -> dict[str, np.ndarray]:
    """Cropped uint8 photos from scikit-image, by name."""
    sk = _skimage()
    out = {}
    for name in SKIMAGE_PHOTOS[:n] if n else SKIMAGE_PHOTOS:
        loader, index = _PHOTO_SOURCES[name]
        img = getattr(sk.data, loader)()
        img = img[index] if index is not None else img
        out[name] = center_crop_uint8(img, resize=round(size * 256 / 224), crop=size)
    return out


def load_images_dir(path: str | os.PathLike, size: int = 224) -> dict[str, np.ndarray]:
    sk = _skimage()
    import skimage.io

    root = Path(path)
    if not root.is_dir():
        raise ArtifactError(f"image directory not found: {root}", hint="pass an existing --images DIR")
    files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ArtifactError(f"no images in {root}", hint=f"expected files ending in {', '.join(IMAGE_SUFFIXES)}")
    out = {}
    for p in files:
        try:
            img = skimage.io.imread(p)
        except Exception as e:  # decoders raise many types
            raise ArtifactError(f"cannot decode image {p}: {first_line(e)}",
                                hint="remove the file or convert it to PNG/JPEG") from e
        if img.dtype != np.uint8:
            img = sk.util.img_as_ubyte(img)
        out[p.name] = center_crop_uint8(img, resize=round(size * 256 / 224), crop=size)
    return out


def batch(images: dict[str, np.ndarray]) -> np.ndarray:
    return np.stack([normalize(v) for v in images.values()])


def photo_batch(n: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """n inputs for a stage's own check: real photos first (so top-1 means something), then seeded noise."""
    photos = batch(sample_photos(min(n, len(SKIMAGE_PHOTOS)), size=size))
    extra = n - len(photos)
    if extra > 0:
        noise = np.random.default_rng(seed).standard_normal((extra, 3, size, size)).astype(np.float32)
        photos = np.concatenate([photos, noise])
    return photos
