"""Where a mismatch starts: module boundaries, reference activations, and ONNX graphs cut at them.

Boundaries are torch module paths in execution order: `downsample_layers.0` (the stem), then per stage
`stages.i.j.attn`, `stages.i.j.mlp`, `stages.i.j` (the whole block), the next downsample, ..., `head`,
`pred` (the logits). The `attn`/`mlp` boundaries are the branch outputs times their layer scale, i.e.
what the block adds to its residual: onnxsim folds the layer scale into the branch's last conv, so the
unscaled branch output no longer exists in a simplified graph. A backend reports its own value of each boundary it can expose; the first whose
relative error exceeds the precision class's `localize` tolerance is where divergence starts.

A compiled bundle has no named boundaries: its graph is fused, and only kernel outputs exist. Such a
backend returns `KernelOutputs` (every kernel's output, in call order, from running the artifact's own
code), and `align` finds each boundary among them by value: a boundary matches the first later output
within the tolerance. Boundaries the bundle never materializes (fused away) match nothing and are left
out; the divergence starts at the first boundary after the last one that matched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from c2f_edge.core.metrics import activation_error


def boundaries(model) -> list[str]:
    """Module boundaries of a Conv2Former, in execution order."""
    return boundaries_of_depths([len(stage) for stage in model.stages])


def boundaries_of_depths(depths: list[int]) -> list[str]:
    """Module boundaries of a Conv2Former with `depths` blocks per stage, in execution order."""
    out = []
    for i, depth in enumerate(depths):
        out.append(f"downsample_layers.{i}")
        for j in range(depth):
            out += [f"stages.{i}.{j}.attn", f"stages.{i}.{j}.mlp", f"stages.{i}.{j}"]
    return out + ["head", "pred"]


def depths_of_scopes(scopes) -> list[int]:
    """Blocks per stage, from the module paths (`stages.I.J...`) an exported graph's nodes carry."""
    depths: dict[int, int] = {}
    for name in scopes:
        m = re.match(r"stages\.(\d+)\.(\d+)(\.|$)", name)
        if m:
            i, j = int(m.group(1)), int(m.group(2))
            depths[i] = max(depths.get(i, 0), j + 1)
    return [depths.get(i, 0) for i in range(max(depths) + 1)] if depths else []


def block_of(boundary: str) -> str:
    """The block (or stem/downsample/head) a boundary belongs to: stages.2.5.attn -> stages.2.5."""
    parts = boundary.split(".")
    return ".".join(parts[:3]) if parts[0] == "stages" else ".".join(parts[:2]) if len(parts) > 1 else boundary


def describe(boundary: str) -> str:
    return "stem (downsample_layers.0)" if boundary == "downsample_layers.0" else boundary


def reference_activations(model, x: np.ndarray, names: list[str]) -> dict[str, np.ndarray]:
    """Torch fp32 outputs of the named modules for one input, via forward hooks."""
    import torch

    modules = dict(model.named_modules())
    acts, handles = {}, []
    for name in names:
        scale = None
        if name.endswith((".attn", ".mlp")):
            block = modules[name.rsplit(".", 1)[0]]
            scale = block.layer_scale_1 if name.endswith(".attn") else block.layer_scale_2

        def hook(_m, _inp, out, name=name, scale=scale):
            if scale is not None:
                out = scale[:, None, None] * out
            acts[name] = out.detach().numpy().copy()
        handles.append(modules[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)))
    finally:
        for h in handles:
            h.remove()
    return acts


def first_divergence(ref: dict[str, np.ndarray], got: dict[str, np.ndarray], order: list[str],
                     threshold: float) -> dict:
    """Per-boundary relative errors and the first boundary above `threshold`."""
    profile = []
    first = None
    for name in order:
        if name not in got or name not in ref:
            continue
        if np.size(got[name]) != np.size(ref[name]):
            err = float("inf")
        else:
            err = activation_error(ref[name], got[name])
        profile.append({"boundary": name, "rel_err": err})
        if first is None and not err <= threshold:
            first = name
    return {
        "diverges_at": first,
        "block": block_of(first) if first else None,
        "threshold": threshold,
        "compared": len(profile),
        "missing": [n for n in order if n not in got],
        "profile": profile,
    }


@dataclass
class KernelOutputs:
    """What a fused artifact exposes instead of named boundaries: its kernels' outputs in call order."""

    outputs: list[tuple[str, np.ndarray]]  # (kernel name, output)
    where: str  # where the kernels ran, for the report

    def __len__(self) -> int:
        return len(self.outputs)


def as_nchw(a: np.ndarray) -> np.ndarray:
    """A channel-blocked activation [N, C/b, H, W, b] as NCHW; anything else as it is."""
    a = np.asarray(a)
    if a.ndim == 5:
        n, cb, h, w, b = a.shape
        return a.transpose(0, 1, 4, 2, 3).reshape(n, cb * b, h, w)
    return a


def align(ref: dict[str, np.ndarray], order: list[str], found: KernelOutputs,
          threshold: float) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Boundary -> the artifact's tensor for it, and boundary -> the kernel that wrote it.

    Walking the boundaries in order, each matches the first kernel output after the previous match that
    has its size and is within `threshold`. After the last match, every remaining boundary gets its
    closest same-size output, so `first_divergence` reports where matching stopped and by how much --
    except branch boundaries (`.attn`, `.mlp`) when no branch of that kind matched before: the artifact
    fused them away, and the divergence is then reported at the block."""
    outs = [(name, as_nchw(a)) for name, a in found.outputs]
    got, kernel, pos, last = {}, {}, 0, -1
    for k, name in enumerate(order):
        r = ref.get(name)
        if r is None:
            continue
        for i in range(pos, len(outs)):
            o = outs[i][1]
            if o.size == r.size and activation_error(r, o) <= threshold:
                got[name], kernel[name], pos, last = o, outs[i][0], i + 1, k
                break
    seen_branches = {n.rsplit(".", 1)[1] for n in got if n.endswith((".attn", ".mlp"))}
    for name in order[last + 1:]:
        if name.endswith((".attn", ".mlp")) and name.rsplit(".", 1)[1] not in seen_branches:
            continue
        r = ref.get(name)
        cands = [(activation_error(r, o), kn, o) for kn, o in outs[pos:] if r is not None and o.size == r.size]
        if cands:
            _, kernel[name], got[name] = min(cands, key=lambda c: c[0])
    return got, kernel
