"""Compute precision of a CPU bundle: what runs in which dtype, and which cores can run it.

fp16 is Relax's ToMixedPrecision (fp16 weights, activations and conv/matmul accumulators) with these
exceptions, decided by measurement and recorded in the bundle's manifest:
- LayerNorm statistics stay fp32 inside the norm kernel: `(x - mean)^2` overflows fp16 once
  activations pass about 256 (the Core ML path keeps its variance in fp32 for the same reason);
- the GELU computes in fp32 inside its kernel (TOPI's erf polynomial loses too much in fp16);
- the classifier sums in fp32 (its sums are the logits);
- the bundle's input and logits stay fp32, so callers do not change.
And one change of order: a dense conv sums 16 products (at most one register of lanes: 8 on NEON) into a
partial sum before adding it to its running fp16 sum, so the large sum is rounded once per chunk, not at
every product.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from c2f_edge.core.errors import UsageError


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32" | "fp16": the CLI's word and the parity tolerance class
    dtype: str  # weights, activations, conv and matmul accumulators
    norm_stats: str  # the LayerNorm sums, mean and variance
    gelu: str  # what the GELU computes in (it reads and writes `dtype`)
    conv_chunk: int = 0  # fp16 dense convs: products per partial sum, added to the running sum (0: one sum)
    kept_fp32: dict = field(default_factory=dict)  # what stays fp32 in an fp16 build, and why

    @property
    def mixed(self) -> bool:
        return self.dtype != "float32"

    def describe(self) -> dict:
        """The manifest's "precision" section."""
        return {"name": self.name, "dtype": self.dtype, "norm_statistics": self.norm_stats, "gelu": self.gelu,
                "conv_accumulation": (f"{self.dtype} partial sums of {self.conv_chunk} products (at most one "
                                      f"vector register of lanes: 8 on NEON), added to the running {self.dtype} "
                                      "sum" if self.conv_chunk else self.dtype),
                "boundary": "float32 input and logits", "kept_fp32": dict(self.kept_fp32)}


FP32 = Precision("fp32", "float32", "float32", "float32")
# conv_chunk: one running fp16 sum over a 1x1 conv (up to 2,048 products) put Conv2Former-N's logits 1.23%
# of the top logit off (fp16 class: 1%); partial sums of 16 products added to it: 0.59%, about as close as
# adding them in fp32 (0.56%), and still all 8-lane fp16 FMAs (4 photos, x86 host with AVX512-FP16). On
# the stress set the x86 host passed with 16 (0.97%) and failed with 8 (1.14%); the emulated A76 failed
# with 16 (1.35%) and passed with 8 (0.87%), one NEON register of lanes: so at most one register's lanes.
FP16 = Precision("fp16", "float16", "float32", "float32", conv_chunk=16, kept_fp32={
    "layer_norm statistics": "(x - mean)^2 overflows fp16 once activations pass ~256; the sums, mean and "
                             "variance are fp32 inside each norm kernel (no extra memory traffic)",
    "gelu arithmetic": "TOPI's rational erf evaluated in fp16 more than doubled the logit error of "
                       "Conv2Former-N (max abs 0.037 -> 0.088 on 4 photos, x86 host); it reads and writes fp16",
    "classifier sum": "its sums are the logits; 0.02% of the MACs",
    "input and logits": "the bundle's boundary: cast to fp16 after the input, to fp32 before the logits",
})
PRECISIONS = {p.name: p for p in (FP32, FP16)}
# What a CPU needs for fp16 arithmetic, per LLVM feature name (ARMv8.2 FP16, AVX512-FP16).
FP16_FEATURES = ("fullfp16", "avx512fp16")


def get(name: str) -> Precision:
    if name not in PRECISIONS:
        raise UsageError(f"unknown --precision {name!r}", hint=f"one of: {', '.join(PRECISIONS)}")
    return PRECISIONS[name]


def has_fp16(target) -> bool:
    """True when an llvm target has native fp16 arithmetic (ARMv8.2 `fullfp16`, x86 `avx512fp16`)."""
    from tvm.target import codegen

    from c2f_edge.backend.targets import as_target

    target = as_target(target)
    if target.kind.name != "llvm":
        return False
    for feature in FP16_FEATURES:
        try:
            if bool(codegen.target_has_features(feature, target)):
                return True
        except Exception:  # noqa: BLE001, S112 - a feature name this architecture does not know
            continue
    return False


def fp16_targets() -> list[str]:
    """Registered CPU targets whose core has fp16 arithmetic (host counts where this CPU has it)."""
    from c2f_edge.backend import targets

    return [name for name, spec in targets.registry().items()
            if spec.device == "CPU" and has_fp16(spec.to_json())]


def check(spec, precision: Precision) -> None:
    """UsageError, before anything is built, when `spec` (a TargetSpec) cannot run `precision`."""
    if not precision.mixed:
        return
    if spec.device != "CPU":
        raise UsageError(f"--precision {precision.name}: {spec.name} is a GPU target; half precision on GPUs "
                         "waits for the OpenCL runtime",
                         hint="build it with --precision fp32 (the default)")
    if has_fp16(spec.to_json()):
        return
    core = spec.canonical().get("mcpu") or "its baseline CPU"
    have = ", ".join(fp16_targets()) or "none here"
    raise UsageError(f"--precision {precision.name}: {spec.name} ({core}) has no fp16 arithmetic "
                     "(ARMv8.2 FP16 or AVX512-FP16); there is no silent fallback to fp32",
                     hint=f"targets with it: {have}; for another ARMv8.2 core pass a target JSON with "
                          "\"mattr\": [\"+neon\", \"+fullfp16\"], or build --precision fp32")
