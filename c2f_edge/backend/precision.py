"""Compute precision of a bundle: what runs in which dtype, and which cores or GPUs can run it.

fp16 is Relax's ToMixedPrecision (fp16 weights, activations and conv/matmul accumulators) with these
exceptions, decided by measurement and recorded in the bundle's manifest:
- LayerNorm statistics stay fp32 inside the norm kernel: `(x - mean)^2` overflows fp16 once
  activations pass about 256 (the Core ML path keeps its variance in fp32 for the same reason);
- the GELU computes in fp32 inside its kernel (its rational function needs fp32's range, and an erf
  polynomial evaluated in fp16 loses too much);
- the classifier sums in fp32 (its sums are the logits);
- the bundle's input and logits stay fp32, so callers do not change.
And one change of order: a dense conv sums 16 products (at most one register of lanes: 8 on NEON) into a
partial sum before adding it to its running fp16 sum, so the large sum is rounded once per chunk, not at
every product.

On GPUs (OpenCL half, `cl_khr_fp16`) the same fp16 build keeps one more thing in fp32: the conv and
matmul sums (`for_device`). See FP16_GPU for why.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from c2f_edge.core.errors import UsageError


@dataclass(frozen=True)
class Precision:
    name: str  # "fp32" | "fp16": the CLI's word and the parity tolerance class
    dtype: str  # weights, activations, conv and matmul accumulators
    norm_stats: str  # the LayerNorm sums, mean and variance
    gelu: str  # what the GELU computes in (it reads and writes `dtype`)
    conv_chunk: int = 0  # fp16 dense convs: products per partial sum, added to the running sum (0: one sum)
    accumulator: str = ""  # conv and matmul sums, when not `dtype` (ToMixedPrecision's out_dtype)
    kept_fp32: dict = field(default_factory=dict)  # what stays fp32 in an fp16 build, and why

    @property
    def mixed(self) -> bool:
        return self.dtype != "float32"

    @property
    def sums(self) -> str:
        """The dtype conv and matmul results are summed in."""
        return self.accumulator or self.dtype

    def for_device(self, gpu: bool) -> Precision:
        """This precision as built for a CPU or a GPU target (they differ in fp16: FP16_GPU)."""
        return FP16_GPU if gpu and self.name == FP16.name else self

    def describe(self) -> dict:
        """The manifest's "precision" section."""
        if self.conv_chunk:
            sums = (f"{self.dtype} partial sums of {self.conv_chunk} products (at most one vector register of "
                    f"lanes: 8 on NEON), added to the running {self.dtype} sum")
        elif self.sums != self.dtype:
            sums = f"{self.sums} products and sums of {self.dtype} inputs and weights, result stored as {self.dtype}"
        else:
            sums = self.dtype
        return {"name": self.name, "dtype": self.dtype, "norm_statistics": self.norm_stats, "gelu": self.gelu,
                "conv_accumulation": sums,
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
    "gelu arithmetic": "its rational function's denominator reaches 2.4e6 (fp16's range ends at 65504), and "
                       "TOPI's erf, used before, evaluated in fp16 more than doubled the logit error of "
                       "Conv2Former-N (max abs 0.037 -> 0.088 on 4 photos, x86 host); it reads and writes fp16",
    "classifier sum": "its sums are the logits; 0.02% of the MACs",
    "input and logits": "the bundle's boundary: cast to fp16 after the input, to fp32 before the logits",
})
# On GPUs the conv sums stay fp32 (why: its kept_fp32); weights and activations are still fp16 in memory
# (half the bytes moved) and the elementwise work is fp16. The CPU's chunked sums are a CPU layout
# (passes/block_channels.py) that dlight's GPU schedules do not have.
FP16_GPU = replace(FP16, conv_chunk=0, accumulator="float32", kept_fp32={
    **{k: v for k, v in FP16.kept_fp32.items() if k != "classifier sum"},
    "conv and matmul sums": "dlight's GPU kernels sum a whole conv in one running register; one fp16 running "
                            "sum put Conv2Former-N 1.23% off on the CPU (fp16 class: 1%), and no GPU here "
                            "can run half to measure better; products of fp16 values are exact in fp32",
})
PRECISIONS = {p.name: p for p in (FP32, FP16)}
# What a CPU needs for fp16 arithmetic, per LLVM feature name (ARMv8.2 FP16, AVX512-FP16).
FP16_FEATURES = ("fullfp16", "avx512fp16")
# GPUs (TVM's OpenCL `device`) whose every OpenCL driver offers cl_khr_fp16: Mali since Midgard, Adreno.
FP16_GPUS = ("mali", "adreno")


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
        device = spec.canonical().get("device")
        if spec.kind == "opencl" and device in FP16_GPUS:
            return
        raise UsageError(f"--precision {precision.name}: {spec.name} (a {spec.kind} GPU target, device "
                         f"{device or 'not named'}) is not known to have half precision (cl_khr_fp16)",
                         hint=f"GPU targets with it: OpenCL device {' or '.join(FP16_GPUS)} (--target mali, "
                              "adreno); or build --precision fp32")
    if has_fp16(spec.to_json()):
        return
    core = spec.canonical().get("mcpu") or "its baseline CPU"
    have = ", ".join(fp16_targets()) or "none here"
    raise UsageError(f"--precision {precision.name}: {spec.name} ({core}) has no fp16 arithmetic "
                     "(ARMv8.2 FP16 or AVX512-FP16); there is no silent fallback to fp32",
                     hint=f"targets with it: {have}; for another ARMv8.2 core pass a target JSON with "
                          "\"mattr\": [\"+neon\", \"+fullfp16\"], or build --precision fp32")
