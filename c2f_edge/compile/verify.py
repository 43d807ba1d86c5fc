"""The check of a freshly built bundle, before it is written: does it compute what PyTorch fp32 computes?

Tuned schedules can miscompile (reported for MetaSchedule on Mali), so the bundle itself runs on real
photos (here, on the emulated aarch64 board, or on a board over RPC) and its logits are judged in the
fp32 tolerance class (core.metrics) against the PyTorch model the ONNX file was exported from (the
export's manifest names its weights). An ONNX file from elsewhere, whose weights are not recorded, is
judged against ONNX Runtime on that file instead, and the manifest says so.

    verify_bundle("build/host")                               # runs here
    verify_bundle("build/arm64", "emulated")                  # starts the emulated aarch64 board
    verify_bundle("build/arm64", "rpc://tracker@10.0.0.5:9190/rk3588")

`--verify MODE` picks a verifier from VERIFIERS: a name ("local", "emulated") or a prefix ("rpc://").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from c2f_edge.board.remote import parse_rpc
from c2f_edge.compile.bundle import load_bundle, load_remote_bundle, read_bundle_manifest
from c2f_edge.core.artifacts import read_manifest
from c2f_edge.core.errors import ArtifactError, OutputMismatchError, UsageError
from c2f_edge.core.metrics import judge, logit_metrics, tolerances

VERIFY_INPUTS = 2


@dataclass
class VerifyContext:
    bundle_dir: Path  # the bundle being written (model.so and a draft manifest are in it)
    onnx_path: Path | None = None  # the ONNX it was built from (its manifest names the weights)


Verifier = Callable[[VerifyContext], dict]
# name -> factory(mode) -> verifier. A name ending in "://" matches every mode with that prefix.
VERIFIERS: dict[str, Callable[..., Verifier]] = {}


def register_verifier(name: str):
    """Register `factory(mode, target=None) -> verifier`. The factory raises UsageError (a bad address)
    before anything is built; given the TargetSpec about to be built, it also refuses what it could not
    verify (a bundle its device cannot run, a board that does not answer), so a build is not wasted. A
    verifier returns a summary for the manifest, or raises OutputMismatchError."""
    def deco(factory):
        VERIFIERS[name] = factory
        return factory
    return deco


def resolve_verifier(mode: str, target=None) -> Verifier | str:
    """'auto' / 'none' stay as they are; anything else -> a verifier, or an error (before building)."""
    if mode in ("auto", "none"):
        return mode
    if mode in VERIFIERS:
        return VERIFIERS[mode](mode, target)
    for prefix, factory in VERIFIERS.items():
        if prefix.endswith("://") and mode.startswith(prefix):
            return factory(mode, target)
    choices = ", ".join(["auto", "none", *(n + "..." if n.endswith("://") else n for n in VERIFIERS)])
    raise UsageError(f"unknown --verify mode {mode!r}", hint=f"one of: {choices}")


def reference(ctx: VerifyContext, x):
    """(reference logits, what they come from) for the bundle being verified."""
    from c2f_edge.models.weights import load_model, weights_of_artifact

    onnx_path = ctx.onnx_path or Path(read_bundle_manifest(ctx.bundle_dir)["onnx"]["path"])
    try:
        w = weights_of_artifact(read_manifest(onnx_path.parent))
    except ArtifactError:
        w = None
    if w is not None:
        import torch

        model, _ = load_model(w["variant"], checkpoint=w["checkpoint"], weights=w["weights"], seed=w["seed"])
        with torch.no_grad():
            return model(torch.from_numpy(x)).numpy(), "torch fp32"
    from c2f_edge.core.onnx_file import ort_session, run_ort

    return run_ort(ort_session(str(onnx_path)), x), "onnxruntime (the ONNX file records no weights)"


def bundle_precision(manifest: dict) -> str:
    """The tolerance class a bundle is judged in: its compute precision (bundles before --precision: fp32)."""
    return (manifest.get("precision") or {}).get("name", "fp32")


def check_bundle(run, ctx: VerifyContext, how: str, device: str, n: int = VERIFY_INPUTS) -> dict:
    """Run `run` (a BundleRunner) on n photos and judge it against the reference."""
    from c2f_edge.core.images import photo_batch

    manifest = read_bundle_manifest(ctx.bundle_dir)
    shape = manifest["input"]["shape"]
    precision = bundle_precision(manifest)
    x = photo_batch(n, size=shape[-1])
    t0 = time.perf_counter()
    out = run(x)
    seconds = (time.perf_counter() - t0) / len(x)
    ref, ref_name = reference(ctx, x)
    tol = tolerances()[precision]
    metrics = {k: v for k, v in logit_metrics(ref, out).items() if k != "per_input_max_abs_diff"}
    failures = judge(metrics, tol)
    if failures:
        raise OutputMismatchError(
            f"the compiled bundle ({how}) disagrees with {ref_name}: {'; '.join(failures)}",
            hint="try --tuning-log none to rule out a bad tuning log; `c2f-edge parity` localizes where it "
                 "diverges; --no-verify writes it anyway")
    return {**metrics, "reference": ref_name, "how": how, "device": device, "precision": precision,
            "tolerance": tol, "seconds_per_inference": round(seconds, 4),
            "timing_note": "one cold run per input, for orientation only; use `c2f-edge profile` for latency"}


def verify_bundle(bundle_dir, how: str = "local", n: int = VERIFY_INPUTS, onnx_path=None) -> dict:
    """Check a bundle on disk: locally, on the emulated board ("emulated") or over RPC ("rpc://...")."""
    return resolve_verifier(how)(VerifyContext(Path(bundle_dir), Path(onnx_path) if onnx_path else None), n=n)


@register_verifier("local")
def _local(mode: str, target=None) -> Verifier:
    if target is not None and not target.runs_here:
        raise UsageError(f"--verify local: a {target.name} bundle cannot run on this machine",
                         hint="use --verify emulated or rpc://..., or build --target host")

    def verify(ctx: VerifyContext, n: int = VERIFY_INPUTS) -> dict:
        return check_bundle(load_bundle(ctx.bundle_dir), ctx, "local", "this machine", n)
    return verify


def _on_board(mode: str) -> Verifier:
    def verify(ctx: VerifyContext, n: int = VERIFY_INPUTS) -> dict:
        from c2f_edge.board.remote import open_session

        handle = open_session(mode)
        try:
            run = load_remote_bundle(ctx.bundle_dir, handle.session)
            return check_bundle(run, ctx, mode, handle.describe(), n)
        finally:
            handle.close()
    return verify


@register_verifier("emulated")
def _emulated(mode: str, target=None) -> Verifier:
    if target is not None:
        from c2f_edge.board import emulator

        emulator.check_runs(target)
    return _on_board(mode)


@register_verifier("rpc://")
def _rpc(mode: str, target=None) -> Verifier:
    parse_rpc(mode)  # a malformed address fails before anything is built
    if target is not None:
        from c2f_edge.board.remote import check_reachable

        check_reachable(mode)
    return _on_board(mode)


def run_verifier(mode: str, verifier, ctx: VerifyContext, runs_here: bool, target_name: str) -> dict:
    """The manifest's "parity" section for `--verify mode`."""
    if verifier == "none":
        return {"status": "skipped", "note": "--no-verify"}
    if verifier == "auto":
        if not runs_here:
            return {"status": "not run",
                    "note": f"target {target_name} does not run on this machine; check it on the board "
                            "(or an emulated one) with --verify emulated|rpc://... or `c2f-edge parity`"}
        mode, verifier = "local", resolve_verifier("local")
    return {"status": "passed", mode: verifier(ctx)}
