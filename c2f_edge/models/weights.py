"""Where a model's weights come from: an official checkpoint, or deterministic synthetic weights."""

from __future__ import annotations

import argparse
import os
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from c2f_edge.core.artifacts import sha256_file
from c2f_edge.core.errors import CheckpointError, first_line
from c2f_edge.models import create_model, variant_info
from c2f_edge.models.conv2former import Block, Conv2Former, LayerNorm

SYNTHETIC_WARNING = ("synthetic weights are NOT trained: predictions are meaningless, "
                     "but every block contributes, so parity checks are real")
_DW_KEY = "stages.0.0.attn.att.2.weight"
_WRAPPERS = ("model", "state_dict", "state_dict_ema", "model_ema")


@dataclass
class WeightsSource:
    kind: str  # "checkpoint" | "synthetic"
    sha256: str
    path: str | None = None
    seed: int | None = None
    wrapper: str | None = None  # the dict key the state_dict was found under, if any

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None}


def synthesize_weights(model: Conv2Former, seed: int = 0) -> Conv2Former:
    """Fill `model` with deterministic weights under which every block matters.

    The official init uses layer scales of 1e-6, which makes each block almost an identity, so a
    backend that dropped a block would still pass parity. Here layer scales are 0.1-1, convs are
    variance-preserving, and BatchNorm has non-trivial running statistics.
    """
    g = torch.Generator().manual_seed(seed)

    def uniform(t, lo, hi):
        return torch.rand(t.shape, generator=g) * (hi - lo) + lo

    def normal(t, std):
        return torch.randn(t.shape, generator=g) * std

    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                fan_in = m.weight[0].numel()
                m.weight.copy_(normal(m.weight, (2.0 / fan_in) ** 0.5))
                if m.bias is not None:
                    m.bias.copy_(normal(m.bias, 0.1))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(uniform(m.weight, 0.5, 1.5))
                m.bias.copy_(normal(m.bias, 0.1))
                m.running_mean.copy_(normal(m.running_mean, 0.2))
                m.running_var.copy_(uniform(m.running_var, 0.5, 2.0))
            elif isinstance(m, LayerNorm):
                m.weight.copy_(uniform(m.weight, 0.5, 1.5))
                m.bias.copy_(normal(m.bias, 0.1))
            elif isinstance(m, Block):
                m.layer_scale_1.copy_(uniform(m.layer_scale_1, 0.1, 1.0))
                m.layer_scale_2.copy_(uniform(m.layer_scale_2, 0.1, 1.0))
    return model.eval()


def state_dict_sha256(sd: dict[str, torch.Tensor]) -> str:
    import hashlib

    h = hashlib.sha256()
    for k in sorted(sd):
        t = sd[k].detach().contiguous().cpu()
        h.update(k.encode())
        h.update(str(tuple(t.shape)).encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], str | None]:
    """Read a checkpoint file and unwrap it to a bare state_dict without a `module.` prefix."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}", hint="check the --checkpoint path")
    try:
        # timm-style checkpoints carry the training args; allow that one class, nothing else.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {first_line(e)}",
                              hint="the file is corrupt or not a PyTorch checkpoint; download it again") from e
    wrapper = None
    if isinstance(obj, dict):
        for key in _WRAPPERS:
            if isinstance(obj.get(key), dict):
                obj, wrapper = obj[key], key
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path} holds no state_dict",
                              hint=f"expected a state_dict, or one under one of the keys {', '.join(_WRAPPERS)}")
    sd = {k.removeprefix("module."): v for k, v in obj.items()}
    return sd, wrapper


def check_state_dict(model: nn.Module, sd: dict[str, torch.Tensor], variant: str, limit: int = 5) -> None:
    """Raise one clear error for missing/unexpected keys and shape mismatches."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(v.shape)}"
              for k, v in expected.items() if k in sd and tuple(sd[k].shape) != tuple(v.shape)]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)):
        if items:
            more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
            problems.append(f"{len(items)} {label}: {'; '.join(items[:limit])}{more}")
    if problems:
        raise CheckpointError(f"checkpoint does not fit Conv2Former-{variant.upper()}: " + " | ".join(problems),
                              hint="is it a checkpoint of another variant? pass the matching --variant")


def _kernel_size(sd: dict[str, torch.Tensor], default: int) -> int:
    # The official N checkpoint config moved from 11x11 to 7x7 kernels; take it from the weights.
    w = sd.get(_DW_KEY)
    if w is not None and w.ndim == 4 and w.shape[-1] == w.shape[-2] and w.shape[-1] % 2 == 1:
        return int(w.shape[-1])
    return default


def load_model(variant: str = "n", checkpoint: str | os.PathLike | None = None,
               weights: str | None = None, seed: int = 0) -> tuple[Conv2Former, WeightsSource]:
    """The one way every stage gets a model: from a checkpoint, or `weights='synthetic'`."""
    info = variant_info(variant)
    if checkpoint is not None:
        sd, wrapper = read_checkpoint(checkpoint)
        model = create_model(info.name, kernel_size=_kernel_size(sd, info.kernel_size))
        check_state_dict(model, sd, info.name)
        model.load_state_dict(sd, strict=True)
        source = WeightsSource("checkpoint", sha256_file(checkpoint), path=str(checkpoint), wrapper=wrapper)
    elif weights == "synthetic":
        model = create_model(info.name)
        synthesize_weights(model, seed)
        source = WeightsSource("synthetic", state_dict_sha256(model.state_dict()), seed=seed)
    else:
        raise CheckpointError("no weights given", hint="pass --checkpoint PATH or --weights synthetic")
    return model.eval(), source


def weights_of_artifact(manifest: dict) -> dict | None:
    """{"variant", "checkpoint", "weights", "seed"} of the model an artifact was made from, as its manifest
    records it (export: top level; Core ML: under "model"; TVM bundle: under "onnx"), or None."""
    sections = [manifest, manifest.get("model") or {}, manifest.get("onnx") or {}]
    src = next((s["weights"] for s in sections if isinstance(s.get("weights"), dict) and "kind" in s["weights"]),
               None)
    if src is None:
        return None
    variant = next((s["variant"] for s in sections if s.get("variant")), None) or "n"
    if src["kind"] == "synthetic":
        return {"variant": variant, "checkpoint": None, "weights": "synthetic", "seed": int(src.get("seed", 0))}
    return {"variant": variant, "checkpoint": src.get("path"), "weights": None, "seed": 0}
