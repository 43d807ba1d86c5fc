"""Post-build parity for `c2f-edge compile --verify`: a fast check of a freshly built (maybe tuned) bundle.

    verify_bundle("build/host")                          # runs here
    verify_bundle("build/arm64", "emulated")             # starts the emulated aarch64 board
    verify_bundle("build/arm64", "rpc://tracker@10.0.0.5:9190/rk3588")

Tuned schedules can miscompile (reported for MetaSchedule on Mali), so the bundle itself is run and
compared with PyTorch fp32 on real photos; OutputMismatchError if it is out of tolerance. Importing this
module registers the "emulated" verifier with c2f_edge.compile.
"""

from __future__ import annotations

from pathlib import Path

from c2f_edge.board.remote import parse_rpc

VERIFY_INPUTS = 2


def verify_bundle(bundle_dir: str | Path, how: str = "local", n: int = VERIFY_INPUTS, localize: bool | None = None,
                  quiet: bool = True) -> dict:
    """Run the bundle (locally, on the emulated board or over RPC) against torch fp32 on `n` photos.

    Returns a summary for the manifest; raises OutputMismatchError (with the diverging module when
    localized) if out of tolerance. `localize` defaults to True only for local runs (a debug build on an
    emulated board is slow)."""
    from c2f_edge.parity.harness import BackendSpec, raise_on_failure, run_parity
    from c2f_edge.parity.inputs import build_inputs

    local = how in (None, "", "local")
    if not local:
        parse_rpc(how)
    spec = (BackendSpec("tvm-local", str(bundle_dir)) if local
            else BackendSpec("tvm-rpc", str(bundle_dir), {"rpc": how}, max_inputs=n))
    inputs = build_inputs("photos", n=n)
    result = run_parity([spec], inputs, reference=BackendSpec("torch", str(bundle_dir)),
                        localize_failures=local if localize is None else localize, quiet=quiet)
    raise_on_failure(result)
    e = result["backends"][0]
    return {"reference": "torch fp32", "how": how or "local", "device": e["device"], "inputs": e["inputs"],
            "precision": e["precision"], "metrics": {k: v for k, v in e["metrics"].items()
                                                     if k != "per_input_max_abs_diff"},
            "tolerance": e["tolerance"], "seconds": e["seconds"]}


def verifier_for(mode: str):
    """A compile verifier `fn(ctx) -> dict` for `--verify emulated` or `--verify rpc://...` (UsageError if
    the address is malformed, so compile can fail before building)."""
    parse_rpc(mode)

    def _verifier(ctx) -> dict:
        return verify_bundle(ctx.bundle_dir, mode)
    return _verifier


def _register() -> None:
    try:
        from c2f_edge.compile.stage import register_verifier
    except ImportError:  # compile not available: verify_bundle still works
        return

    @register_verifier("emulated")
    def _emulated(ctx) -> dict:
        return verify_bundle(ctx.bundle_dir, "emulated")


_register()
