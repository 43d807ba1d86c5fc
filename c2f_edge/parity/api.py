"""One call for the CLI and for other stages: artifacts in, parity result out (reports written)."""

from __future__ import annotations

from pathlib import Path

from c2f_edge.compile.bundle import runs_here
from c2f_edge.core.artifacts import read_manifest
from c2f_edge.core.errors import ArtifactError, UsageError
from c2f_edge.core.metrics import tolerances
from c2f_edge.parity.backends import backend_for_artifact
from c2f_edge.parity.harness import BackendSpec, record_in_manifests, run_parity
from c2f_edge.parity.inputs import build_inputs


def specs_for(artifacts: list[str], explicit: list[tuple[str, str]] = (), rpc: str | None = None,
              rpc_inputs: int | None = 2) -> list[BackendSpec]:
    specs = []
    for path in artifacts:
        name = backend_for_artifact(path)
        if name == "tvm-local" and not runs_here(path):
            gpu = (read_manifest(path).get("runtime") or {}).get("device") == "opencl"
            if gpu and not rpc:  # its kernels run on the local OpenCL device; --rpc sends it to a phone
                specs.append(_spec("tvm-opencl", path, rpc, rpc_inputs))
                continue
            if not rpc:
                target = read_manifest(path).get("target", {}).get("name", "?")
                raise UsageError(f"{path} is a {target} bundle, which does not run on this machine",
                                 hint="pass --rpc rpc://HOST:PORT, --rpc rpc://tracker@HOST:PORT/KEY "
                                      f"or --rpc emulated; or --backend tvm-qemu={path} (any ARM bundle)")
            name = "tvm-rpc"
        specs.append(_spec(name, path, rpc, rpc_inputs))
    for name, path in explicit:
        if not Path(path).exists():
            raise ArtifactError(f"artifact not found: {path}", hint="check the path, or build it first")
        specs.append(_spec(name, path, rpc, rpc_inputs))
    return specs


def _spec(name, path, rpc, rpc_inputs) -> BackendSpec:
    if name == "tvm-rpc":
        if not rpc:
            raise UsageError("backend tvm-rpc needs --rpc", hint="--rpc rpc://HOST:PORT, "
                                                                 "rpc://tracker@HOST:PORT/KEY or emulated")
        from c2f_edge.board.remote import parse_rpc

        parse_rpc(rpc)  # a malformed address fails before any slow step
        return BackendSpec(name, str(path), {"rpc": rpc}, max_inputs=rpc_inputs)
    if name in ("tvm-qemu", "tvm-opencl"):  # minutes per input under emulation, 15-80 s on PoCL
        return BackendSpec(name, str(path), max_inputs=rpc_inputs)
    return BackendSpec(name, str(path))


def check(artifacts: list[str], explicit: list[tuple[str, str]] = (), rpc: str | None = None,
          rpc_inputs: int | None = 2, input_sets: list[str] = ("photos",), images: str | None = None,
          n: int | None = None, input_seed: int = 0, tol: list[str] | dict | None = None,
          export_raw: str | None = None, localize: bool = True, record: bool = True,
          json_path: str | None = None, reference: dict | None = None, quiet: bool = False) -> dict:
    """Check `artifacts` against PyTorch fp32. Raises on unusable inputs; returns the result (a failed
    backend is in the result; harness.raise_on_failure turns it into OutputMismatchError)."""
    tol = tolerances(tol)  # a bad --tol fails before any slow step
    specs = specs_for(artifacts, explicit, rpc, rpc_inputs)
    if not specs and not export_raw:
        raise UsageError("nothing to check", hint="pass artifact directories or --backend NAME=PATH")
    ref_options = {k: v for k, v in (reference or {}).items() if v is not None}
    if not (ref_options.get("weights") or ref_options.get("checkpoint")):
        ref_options = {}
    ref_artifact = specs[0].artifact if specs else ""
    if not specs and not ref_options:
        raise UsageError("--export-raw alone needs the model", hint="pass --weights synthetic or --checkpoint PATH")
    ref_spec = BackendSpec("torch", ref_artifact, ref_options)
    from c2f_edge.parity.backends import make_backend

    model = None
    if export_raw or "stress" in input_sets:
        ref = make_backend("torch", ref_spec.artifact, ref_spec.options)
        model = ref.model
        if export_raw:
            from c2f_edge.export.raw import export_raw as _export

            _export(model, ref.source, export_raw, variant=ref.variant)
            specs.insert(0, BackendSpec("onnxruntime", export_raw))
    inputs = build_inputs(list(input_sets), n=n, seed=input_seed, images=images, model=model)
    result = run_parity(specs, inputs, reference=ref_spec, tol=tol, localize_failures=localize, quiet=quiet)
    if record:
        result["recorded_in"] = record_in_manifests(result)
    if json_path:
        from c2f_edge.parity.report import write_report

        write_report(result, json_path)
    return result
