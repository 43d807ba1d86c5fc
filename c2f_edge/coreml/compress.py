"""Weight compression of a converted ML Program, as a registry: `--compress NAME`.

Each mode wraps `coremltools.optimize.coreml`. Sizes and deviations are measured by `convert.build_package`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from c2f_edge.core.errors import MissingDependencyError, UsageError

# Weights with fewer elements stay uncompressed (norm/bias vectors, the 3x3 stem): coremltools' default.
WEIGHT_THRESHOLD = 2048


@dataclass(frozen=True)
class Compression:
    name: str
    description: str
    min_ios: int
    needs: tuple[str, ...]  # importable modules it needs beyond the core dependencies
    apply: Callable  # (mlmodel, ct) -> mlmodel


COMPRESSIONS: dict[str, Compression] = {}


def register(name: str, description: str, min_ios: int = 16, needs: tuple[str, ...] = ()):
    def deco(fn):
        COMPRESSIONS[name] = Compression(name, description, min_ios, needs, fn)
        return fn
    return deco


@register("none", "no compression")
def _none(ml, ct):
    return ml


@register("int8", "int8 linear (symmetric, per output channel) weight quantization; about 2x smaller than fp16")
def _int8(ml, ct):
    cfg = ct.optimize.coreml.OptimizationConfig(global_config=ct.optimize.coreml.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int8", granularity="per_channel", weight_threshold=WEIGHT_THRESHOLD))
    return ct.optimize.coreml.linear_quantize_weights(ml, config=cfg)


@register("int4", "int4 linear weight quantization per block of 32 input channels (iOS 18+)", min_ios=18)
def _int4(ml, ct):
    cfg = ct.optimize.coreml.OptimizationConfig(global_config=ct.optimize.coreml.OpLinearQuantizerConfig(
        mode="linear_symmetric", dtype="int4", granularity="per_block", block_size=32,
        weight_threshold=WEIGHT_THRESHOLD))
    return ct.optimize.coreml.linear_quantize_weights(ml, config=cfg)


def _palettize(ml, ct, nbits: int):
    # Per-tensor k-means LUT. On fp16 weights with >= 10k elements coremltools runs the exact 1-D k-means
    # (kmeans1d, bundled with it), which takes seconds; smaller or fp32 weights go through scikit-learn's
    # KMeans, which is what made 6-bit palettization of an fp32 model take minutes.
    cfg = ct.optimize.coreml.OptimizationConfig(global_config=ct.optimize.coreml.OpPalettizerConfig(
        mode="kmeans", nbits=nbits, granularity="per_tensor", weight_threshold=WEIGHT_THRESHOLD,
        num_kmeans_workers=1))
    return ct.optimize.coreml.palettize_weights(ml, config=cfg)


@register("palettize4", "4-bit k-means palettization (16-entry LUT per tensor); needs scikit-learn",
          needs=("sklearn.cluster",))
def _pal4(ml, ct):
    return _palettize(ml, ct, 4)


@register("palettize6", "6-bit k-means palettization (64-entry LUT per tensor); needs scikit-learn",
          needs=("sklearn.cluster",))
def _pal6(ml, ct):
    return _palettize(ml, ct, 6)


def tolerance_class(compress: str, precision: str) -> str:
    """The core.metrics tolerance class a package is judged in: its compression's, else its precision."""
    if compress in ("int8", "int4"):
        return compress
    if compress.startswith("palettize"):
        return "palettized"
    return "fp16" if precision == "fp16" else "fp32"


def get(name: str) -> Compression:
    if name not in COMPRESSIONS:
        raise UsageError(f"unknown --compress mode '{name}'", hint=f"valid modes: {', '.join(COMPRESSIONS)}")
    return COMPRESSIONS[name]


def validate(name: str, ios: int) -> Compression:
    """Check a mode before any work: known, allowed for the deployment target, dependencies present."""
    comp = get(name)
    if ios < comp.min_ios:
        raise UsageError(f"--compress {name} needs --ios {comp.min_ios} or later (got --ios {ios})",
                         hint=f"pass --ios {comp.min_ios}, or choose int8/palettize4/palettize6 for iOS {ios}")
    for mod in comp.needs:
        try:
            importlib.import_module(mod)
        except ImportError as e:
            pkg = "scikit-learn" if mod.startswith("sklearn") else mod.split(".")[0]
            raise MissingDependencyError(f"--compress {name} needs {pkg}, which is not installed",
                                         hint="pip install 'c2f-edge[palettize]'  (or: pip install scikit-learn)"
                                         ) from e
    return comp
