"""Where a mismatch starts: module boundaries, reference activations, and ONNX graphs cut at them.

Boundaries are torch module paths in execution order: `downsample_layers.0` (the stem), then per stage
`stages.i.j.attn`, `stages.i.j.mlp`, `stages.i.j` (the whole block), the next downsample, ..., `head`,
`pred` (the logits). The `attn`/`mlp` boundaries are the branch outputs times their layer scale, i.e.
what the block adds to its residual: onnxsim folds the layer scale into the branch's last conv, so the
unscaled branch output no longer exists in a simplified graph. A backend reports its own value of each boundary it can expose; the first whose
relative error exceeds the precision class's `localize` tolerance is where divergence starts.
"""

from __future__ import annotations

import numpy as np

from c2f_edge.core.metrics import activation_error


def boundaries(model) -> list[str]:
    """Module boundaries of a Conv2Former, in execution order."""
    out = []
    for i, stage in enumerate(model.stages):
        out.append(f"downsample_layers.{i}")
        for j in range(len(stage)):
            out += [f"stages.{i}.{j}.attn", f"stages.{i}.{j}.mlp", f"stages.{i}.{j}"]
    return out + ["head", "pred"]


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
