"""The parity backend protocol and its registry: "run this artifact on this batch" implementations of "run this artifact on this batch" implementations.

A backend is built from an artifact path and plain options (strings and numbers), and then only ever
sees input batches: it cannot see the reference outputs or the torch model, so it cannot echo them.
`make_backend` enforces that (options must be JSON scalars), and the harness passes read-only inputs.

    @register_backend
    class MyBackend(Backend):
        name = "my-runtime"
        def __init__(self, artifact, options): ...       # prepare: load the artifact
        def run(self, x): ...                             # [1,3,H,W] float32 -> [1,1000] logits
        def probe(self, x, boundaries): ...               # optional: {module path: activation}
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import ClassVar

import numpy as np

from c2f_edge.core.artifacts import read_manifest
from c2f_edge.core.errors import ArtifactError, UnsupportedError, UsageError


class Backend:
    """One way to compute logits from an artifact. Subclasses set `name` and implement `run`."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    artifact_kinds: ClassVar[tuple[str, ...]] = ()  # manifest kinds accepted, for auto-detection

    def __init__(self, artifact: Path, options: dict):
        self.artifact = Path(artifact)
        self.options = options
        self.precision = "fp32"
        self.device = "this machine"

    def run(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def probe(self, x: np.ndarray, boundaries: list[str]) -> dict[str, np.ndarray]:
        """Activations at module boundaries (see parity.localize) for one input; a subset is fine."""
        raise UnsupportedError(f"backend {self.name} cannot expose intermediate values")

    def boundaries(self) -> list[str]:
        """As a reference: the module boundaries it can report activations at, in execution order
        (parity.localize); [] when it cannot serve as the reference of a localization."""
        return []

    @property
    def label(self) -> str:
        return self.name

    def info(self) -> dict:
        return {"backend": self.name, "label": self.label, "artifact": str(self.artifact),
                "precision": self.precision, "device": self.device}

    def close(self) -> None:
        pass


BACKENDS: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    if not cls.name:
        raise ValueError("a backend needs a name")
    BACKENDS[cls.name] = cls
    return cls


def list_backends() -> list[str]:
    return list(BACKENDS)


def get_backend(name: str) -> type[Backend]:
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, BACKENDS, n=1)
        raise UsageError(f"unknown parity backend '{name}'",
                         hint=(f"did you mean '{close[0]}'? " if close else "") +
                              f"backends: {', '.join(BACKENDS)}")
    return BACKENDS[name]


def make_backend(name: str, artifact: str | os.PathLike, options: dict | None = None) -> Backend:
    """Prepare a backend. Options are plain values only: no arrays, models or callables can get in."""
    options = dict(options or {})
    for k, v in options.items():
        if not isinstance(v, (str, int, float, bool, type(None))):
            raise UsageError(f"backend option {k!r} must be a string or number, not {type(v).__name__}",
                             hint="backends receive only an artifact path, plain options and input batches")
    return get_backend(name)(Path(artifact), options)


def backend_for_artifact(path: str | os.PathLike) -> str:
    """Which backend runs an artifact directory, from its manifest kind."""
    p = Path(path)
    if p.is_file() and p.suffix == ".onnx":
        p = p.parent
    if p.suffix == ".mlpackage":
        p = p.parent
    if not p.exists():
        raise ArtifactError(f"artifact not found: {path}", hint="check the path, or build it first")
    kind = read_manifest(p).get("kind")
    for name, cls in BACKENDS.items():
        if kind in cls.artifact_kinds:
            return name
    raise ArtifactError(f"{path}: no parity backend for artifact kind {kind!r}",
                        hint=f"pass an ONNX, TVM bundle or Core ML directory, or name one of {', '.join(BACKENDS)}")


