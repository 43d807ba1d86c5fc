"""Input sets for parity: real photos (default), the user's images, seeded noise, and a stress set.

All are float32 NCHW batches, ImageNet-normalized like eval (resize 256, center crop 224). Nothing is
downloaded: the photos ship inside scikit-image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from c2f_edge.core.errors import UsageError


@dataclass
class InputSet:
    kind: str
    names: list[str]
    x: np.ndarray  # float32 [N, 3, S, S]

    def __post_init__(self):
        self.x = np.ascontiguousarray(self.x, dtype=np.float32)
        self.x.flags.writeable = False  # shared by every backend: none may change it for the others

    def __len__(self) -> int:
        return len(self.names)

    def take(self, n: int | None) -> InputSet:
        return self if not n or n >= len(self) else InputSet(self.kind, self.names[:n], self.x[:n])

    def to_dict(self) -> dict:
        return {"kind": self.kind, "names": list(self.names), "shape": list(self.x.shape)}


_SETS: dict[str, Callable[..., InputSet]] = {}


def register_input_set(name: str):
    def deco(fn):
        _SETS[name] = fn
        return fn
    return deco


def list_input_sets() -> list[str]:
    return list(_SETS)


@register_input_set("photos")
def photos(n: int | None = None, size: int = 224, seed: int = 0) -> InputSet:
    """scikit-image's bundled colour photographs (astronaut, chelsea, coffee, ...)."""
    from c2f_edge.core.images import batch, sample_photos

    avail = _available_photos()
    imgs = sample_photos(min(n or avail, avail), size=size)
    return InputSet("photos", list(imgs), batch(imgs))


def _available_photos() -> int:
    """How many of images.SKIMAGE_PHOTOS this scikit-image has, counted from the front (some names,
    e.g. motorcycle_left, are not in every release)."""
    import skimage.data

    from c2f_edge.core.images import SKIMAGE_PHOTOS

    n = 0
    for name in SKIMAGE_PHOTOS:
        if not hasattr(skimage.data, name):
            break
        n += 1
    return n


@register_input_set("random")
def random(n: int | None = None, size: int = 224, seed: int = 0) -> InputSet:
    """Seeded standard-normal tensors (in normalized units, so a typical image's range)."""
    n = n or 4
    x = np.random.default_rng(seed).standard_normal((n, 3, size, size)).astype(np.float32)
    return InputSet("random", [f"normal_seed{seed}_{i}" for i in range(n)], x)


def _patterns(size: int, seed: int) -> dict[str, np.ndarray]:
    """uint8 HxWx3 images built to drive activations high: saturated, high-contrast, high-frequency."""
    yy, xx = np.mgrid[0:size, 0:size]
    out = {}
    for period in (1, 4):
        chk = (((yy // period) + (xx // period)) % 2).astype(np.uint8) * 255
        out[f"checker_{period}px"] = np.stack([chk] * 3, -1)
    stripes = ((xx // 2) % 2).astype(np.uint8) * 255
    out["stripes_red_blue"] = np.stack([stripes, np.zeros_like(stripes), 255 - stripes], -1)
    out["salt_pepper"] = (np.random.default_rng(seed).integers(0, 2, (size, size, 3)) * 255).astype(np.uint8)
    out["white"] = np.full((size, size, 3), 255, np.uint8)
    out["blue_on_yellow"] = np.where(((xx // 8) % 2 == 0)[..., None], [0, 0, 255], [255, 255, 0]).astype(np.uint8)
    return out


@register_input_set("stress")
def stress(n: int | None = None, size: int = 224, seed: int = 0, model=None) -> InputSet:
    """Inputs whose activations run high, for fp16 overflow and rounding.

    With the reference `model`: "hot" images, a photo and a checkerboard pushed by a few signed-gradient
    steps (kept inside the valid pixel range) to maximize the block outputs' peak magnitude; on
    Conv2Former-N with synthetic weights that raises the peak from ~34 to ~120-300, where a square in an
    fp16 LayerNorm variance (x^2 > 65504) overflows. Without a model: the fixed high-contrast patterns
    only (checkerboards, saturated stripes, salt-and-pepper, white).
    """
    from c2f_edge.core.images import batch

    imgs = _patterns(size, seed)
    names, x = list(imgs), batch(imgs)
    if model is not None:
        seeds = np.concatenate([photos(1, size=size).x, x[:1]])[:n or 2]  # ~5 s per step and image
        hot = hot_inputs(model, seeds, seed=seed)
        names, x = ["hot_photo", "hot_checker"][:len(hot)] + names, np.concatenate([hot, x])
    if n:
        names, x = names[:n], x[:n]
    return InputSet("stress", names, x)


HOT_STEPS = 5
HOT_STEP_SIZE = 0.4


def hot_inputs(model, x: np.ndarray, steps: int = HOT_STEPS, step_size: float = HOT_STEP_SIZE,
               seed: int = 0) -> np.ndarray:
    """Signed-gradient ascent on sum over blocks of max |output|, clipped to valid pixels (~5 s/step/image)."""
    import torch

    from c2f_edge.core.artifacts import IMAGENET_MEAN, IMAGENET_STD

    lo = torch.tensor([-m / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(1, 3, 1, 1)
    hi = torch.tensor([(1 - m) / s for m, s in zip(IMAGENET_MEAN, IMAGENET_STD)]).view(1, 3, 1, 1)
    outs: list = []
    watched = [m for name, m in model.named_modules()
               if (name.startswith("stages.") and name.count(".") == 2)
               or (name.startswith("downsample_layers.") and name.count(".") == 1)]
    handles = [m.register_forward_hook(lambda _m, _i, o: outs.append(o)) for m in watched]
    flags = [p.requires_grad for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        result = []
        for xi in x:
            t = torch.from_numpy(np.array(xi[None], dtype=np.float32))
            for _ in range(steps):
                t.requires_grad_(True)
                outs.clear()
                model(t)
                loss = sum(o.abs().amax() for o in outs)
                (g,) = torch.autograd.grad(loss, t)
                with torch.no_grad():
                    t = torch.clamp(t + step_size * g.sign(), lo, hi)
            result.append(t.detach().numpy()[0])
    finally:
        for h in handles:
            h.remove()
        for p, f in zip(model.parameters(), flags):
            p.requires_grad_(f)
    return np.stack(result).astype(np.float32)


def images_dir(path: str, n: int | None = None, size: int = 224) -> InputSet:
    """The user's own images (`--images DIR`); undecodable files raise ArtifactError."""
    from c2f_edge.core.images import batch, load_images_dir

    imgs = load_images_dir(path, size=size)
    if n:
        imgs = dict(list(imgs.items())[:n])
    return InputSet("images", list(imgs), batch(imgs))


def build_inputs(kinds: list[str] | str = "photos", n: int | None = None, size: int = 224, seed: int = 0,
                 images: str | None = None, model=None) -> InputSet:
    """One batch from one or more sets (`n` per set); `images` (a directory) replaces the photos.

    `model` (the torch reference) is used only to generate the stress set's hot inputs."""
    kinds = [kinds] if isinstance(kinds, str) else list(kinds)
    parts = []
    for kind in kinds:
        if kind == "images" or (kind == "photos" and images):
            if not images:
                raise UsageError("input set 'images' needs --images DIR", hint="pass --images DIR")
            parts.append(images_dir(images, n, size))
        elif kind == "stress":
            parts.append(stress(n, size=size, seed=seed, model=model))
        elif kind in _SETS:
            parts.append(_SETS[kind](n, size=size, seed=seed))
        else:
            raise UsageError(f"unknown input set '{kind}'", hint=f"use one of {', '.join(list_input_sets())}")
    if len(parts) == 1:
        return parts[0]
    return InputSet("+".join(p.kind for p in parts), [f"{p.kind}/{nm}" for p in parts for nm in p.names],
                    np.concatenate([p.x for p in parts]))


def activation_peak(model, x: np.ndarray) -> float:
    """Largest |activation| at any module output for one input (how hard it pushes fp16)."""
    import torch

    x = np.array(x, dtype=np.float32)  # writable: torch warns on read-only arrays
    peak = [0.0]

    def hook(_m, _inp, out):
        if isinstance(out, torch.Tensor):
            peak[0] = max(peak[0], float(out.detach().abs().max()))
    handles = [m.register_forward_hook(hook) for m in model.modules()]
    try:
        with torch.no_grad():
            model(torch.from_numpy(np.ascontiguousarray(x[None] if x.ndim == 3 else x)))
    finally:
        for h in handles:
            h.remove()
    return peak[0]
