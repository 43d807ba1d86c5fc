"""ONNX Runtime (CPU) on an exported ONNX file, simplified or raw."""

from __future__ import annotations

from pathlib import Path

from c2f_edge.core.artifacts import manifest_or_empty
from c2f_edge.core.errors import ArtifactError
from c2f_edge.core.onnx_file import load_onnx, ort_session, run_ort
from c2f_edge.parity.backends.base import Backend, register_backend


def _onnx_file(artifact: Path) -> Path:
    p = artifact / "model.onnx" if artifact.is_dir() else artifact
    if not p.is_file():
        raise ArtifactError(f"ONNX file not found: {p}", hint="run `c2f-edge export` first, or fix the path")
    return p


@register_backend
class OnnxRuntimeBackend(Backend):
    """ONNX Runtime (CPU) on an exported ONNX: the simplified `c2f-edge export` output, or the raw
    pre-simplification export (export.raw)."""

    name = "onnxruntime"
    description = "ONNX Runtime CPU on model.onnx"
    artifact_kinds = ("onnx", "onnx-raw")

    def __init__(self, artifact, options):
        super().__init__(artifact, options)
        self.path = _onnx_file(self.artifact)
        self.kind = manifest_or_empty(self.path.parent).get("kind", "onnx")
        self.model = load_onnx(self.path, check=False)
        self.session = ort_session(self.model)

    @property
    def label(self):
        return "onnxruntime[raw]" if self.kind == "onnx-raw" else "onnxruntime"

    def run(self, x):
        return run_ort(self.session, x)

    def boundaries(self):
        """From the module paths the export recorded (its scopes): a Conv2Former of any depths."""
        from c2f_edge.export import scopes
        from c2f_edge.parity.localize import boundaries_of_depths, depths_of_scopes

        names = {s for _, node_scopes in scopes.scopes_for(self.model, self.path) for s in node_scopes}
        depths = depths_of_scopes(names)
        return boundaries_of_depths(depths) if depths else []

    def probe(self, x, boundaries):
        from c2f_edge.export import scopes

        tensors = scopes.boundary_tensors_for(self.model, self.path, boundaries)
        probed = scopes.with_outputs(self.model, list(tensors.values()))
        outs = run_ort(ort_session(probed), x, outputs=list(tensors.values()))
        return dict(zip(tensors, outs))
