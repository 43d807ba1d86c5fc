"""PyTorch fp32 on CPU: the reference every other backend is judged against."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from c2f_edge.core.artifacts import read_manifest
from c2f_edge.core.errors import ArtifactError
from c2f_edge.parity.backends.base import Backend, register_backend


@register_backend
class TorchBackend(Backend):
    """PyTorch fp32 on CPU: the reference. Artifact: a checkpoint (.pth), or any artifact directory whose
    manifest records its weights (synthetic seed or checkpoint path); options variant/weights/seed override."""

    name = "torch"
    description = "PyTorch fp32 (the reference)"

    def __init__(self, artifact: Path, options: dict):
        super().__init__(artifact, options)
        from c2f_edge.models.weights import load_model

        variant, checkpoint, weights, seed = reference_spec(artifact, options)
        self.model, self.source = load_model(variant, checkpoint=checkpoint, weights=weights, seed=seed)
        self.variant = variant

    def run(self, x):
        import torch

        with torch.no_grad():
            return self.model(torch.from_numpy(np.array(x, np.float32))).numpy()

    def boundaries(self):
        from c2f_edge.parity.localize import boundaries

        return boundaries(self.model)

    def probe(self, x, boundaries):
        from c2f_edge.parity.localize import reference_activations

        return reference_activations(self.model, np.array(x, np.float32), boundaries)

    def info(self):
        return {**super().info(), "variant": self.variant, "weights": self.source.to_dict()}


def reference_spec(artifact: Path, options: dict) -> tuple[str, str | None, str | None, int]:
    """(variant, checkpoint, weights, seed) of the model an artifact was made from."""
    from c2f_edge.models.weights import weights_of_artifact

    if options.get("weights") or options.get("checkpoint"):
        return (options.get("variant") or "n", options.get("checkpoint"), options.get("weights"),
                int(options.get("seed") or 0))
    if artifact.is_file() and artifact.suffix in (".pth", ".pt", ".bin"):
        return options.get("variant") or "n", str(artifact), None, 0
    d = artifact.parent if artifact.is_file() or artifact.suffix == ".mlpackage" else artifact
    w = weights_of_artifact(read_manifest(d))
    if w is None:
        raise ArtifactError(f"{d}/manifest.json does not say which weights it was built from",
                            hint="pass the reference model: --weights synthetic or --checkpoint PATH")
    return options.get("variant") or w["variant"], w["checkpoint"], w["weights"], w["seed"]
