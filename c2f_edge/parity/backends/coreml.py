"""Core ML packages: the NumPy MIL interpreter on Linux, MLModel.predict on macOS."""

from __future__ import annotations

import numpy as np

from c2f_edge.core.artifacts import manifest_or_empty
from c2f_edge.core.errors import UnsupportedError
from c2f_edge.coreml.compress import tolerance_class
from c2f_edge.parity.backends.base import Backend, register_backend


@register_backend
class CoreMLBackend(Backend):
    """A `c2f-edge coreml` package: the NumPy MIL interpreter on Linux, MLModel.predict on macOS.
    fp16 packages run in fp16 emulation; compressed ones are judged in their compression's class."""

    name = "coreml"
    description = "Core ML package (NumPy MIL interpreter here, MLModel.predict on macOS)"
    artifact_kinds = ("coreml",)

    def __init__(self, artifact, options):
        super().__init__(artifact, options)
        from c2f_edge.coreml import check

        self.check = check
        self.package = check.resolve_package(self.artifact)
        self.manifest = manifest_or_empty(self.package.parent)
        compress = (self.manifest.get("compress") or {}).get("mode", "none")
        self.mode = options.get("mode") or ("fp16" if self.manifest.get("precision") == "fp16" else "fp32")
        self.precision = tolerance_class(compress, self.mode)
        self.image_input = self.manifest.get("input_kind") == "image"
        self.backend = check.select_backend(options.get("runtime") or "auto")
        self.device = "MLModel.predict" if self.backend == "coreml" else "NumPy MIL interpreter"

    @property
    def label(self):
        comp = (self.manifest.get("compress") or {}).get("mode", "none")
        return f"coreml[{self.manifest.get('precision', self.mode)}{'' if comp == 'none' else '+' + comp}]"

    def _feed(self, x):
        x = np.array(x, np.float32)
        if self.image_input:  # the package takes RGB pixels 0..255 and normalizes inside
            from c2f_edge.core.artifacts import IMAGENET_MEAN, IMAGENET_STD

            mean = np.asarray(IMAGENET_MEAN, np.float32).reshape(1, 3, 1, 1)
            std = np.asarray(IMAGENET_STD, np.float32).reshape(1, 3, 1, 1)
            x = (x * std + mean) * 255.0
        return x

    def run(self, x):
        return np.asarray(self.check.run_package(self.package, self._feed(x), mode=self.mode,
                                                 backend=self.backend), np.float32).reshape(len(x), -1)

    def probe(self, x, boundaries):
        # The converter's map gives whole modules; its attn/mlp vars are unscaled, so those are skipped.
        var_map = {b: v for b, v in self.check.module_map(self.package.parent).items()
                   if b in boundaries and not b.endswith((".attn", ".mlp"))}
        if not var_map:
            raise UnsupportedError("this Core ML package records no module -> MIL variable map",
                                   hint="re-create it with `c2f-edge coreml`")
        _, inter = self.check.run_package(self.package, self._feed(x), mode=self.mode, backend="numpy",
                                          return_intermediates=list(var_map.values()))
        return {b: np.asarray(inter[v], np.float32) for b, v in var_map.items() if v in inter}
