"""A GPU bundle's twin: the same graph, GPU target and options, with this machine as the host.

A `mali` or `adreno` bundle's host code is built for the board's CPU, so it cannot run here; its
OpenCL kernels can (board.opencl). The twin is compiled from the ONNX file the bundle was built from,
and is accepted only when its serialized OpenCL module (the kernels) and its VM executable (bytecode
and weights) are byte-identical to the bundle's: then all that differs is the host glue around the
kernel launches, compiled for this CPU from the same code. Twins are cached by the hashes of the
bundle's model.so and of the ONNX file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from c2f_edge.compile.bundle import LIBRARY, read_bundle_manifest
from c2f_edge.core.artifacts import sha256_file
from c2f_edge.core.cache import cache_dir
from c2f_edge.core.errors import ArtifactError, UsageError

CACHE = "opencl-twins"  # under core.cache.cache_root()
GPU_KIND = "opencl"  # a bundle's runtime device


def shipped_modules(so_path: str | Path) -> dict[str, bytes]:
    """What a twin must share with its bundle: the serialized OpenCL module (kernel table and source) and
    the VM executable (bytecode and weights) inside a model.so."""
    from c2f_edge.backend import opencl_module
    from c2f_edge.backend.bundle_file import vm_executable_bytes

    return {"OpenCL kernels": opencl_module.module_bytes(so_path), "VM bytecode and weights": vm_executable_bytes(so_path)}


def _source_onnx(bundle: Path, manifest: dict) -> tuple[Path, str]:
    """The ONNX file the bundle was built from, and its sha256 (checked against the manifest's)."""
    onnx = manifest.get("onnx") or {}
    path = Path((manifest.get("config") or {}).get("onnx") or onnx.get("path") or "")
    if not path.is_file():
        raise ArtifactError(f"the ONNX file {bundle} was built from is gone ({path})",
                            hint="rebuild the bundle with `c2f-edge compile`; its twin is built from the same file")
    sha = sha256_file(path)
    if onnx.get("sha256") and sha != onnx["sha256"]:
        raise ArtifactError(f"{path} changed since {bundle} was built from it",
                            hint="rebuild the bundle with `c2f-edge compile`, then check it")
    return path, sha


def opencl_twin(bundle: str | Path) -> Path:
    """The twin of an OpenCL bundle (built once, then cached), checked to carry the bundle's kernels."""
    from c2f_edge.board.opencl import twin_target
    from c2f_edge.compile.stage import CompileConfig, compile_bundle

    bundle = Path(bundle)
    manifest = read_bundle_manifest(bundle)
    device = (manifest.get("runtime") or {}).get("device", "cpu")
    if device != GPU_KIND:
        raise UsageError(f"{bundle} is a {device} bundle; tvm-opencl checks OpenCL bundles (mali, adreno)",
                         hint="use tvm-local for host bundles, --rpc or tvm-qemu for ARM CPU bundles")
    onnx, onnx_sha = _source_onnx(bundle, manifest)
    key = hashlib.sha256(f"{manifest['files'][LIBRARY]['sha256']} {onnx_sha}".encode()).hexdigest()
    out = cache_dir(CACHE) / key[:16]
    if not (out / LIBRARY).is_file():
        config = manifest.get("config") or {}
        log = ((manifest.get("tuning") or {}).get("log") or {}).get("path") or "none"
        compile_bundle(CompileConfig(
            target=json.dumps(twin_target(manifest["target"]["json"])), onnx=str(onnx), tuning_log=log,
            out=str(out), verify="none", precision=config.get("precision") or "fp32"))
    ours, theirs = shipped_modules(out / LIBRARY), shipped_modules(bundle / LIBRARY)
    if differ := [what for what in theirs if ours[what] != theirs[what]]:
        raise ArtifactError(f"the {' and the '.join(differ)} of {bundle}'s twin differ from the bundle's own",
                            hint="the bundle was built from another ONNX file, c2f-edge or TVM version than its "
                                 "manifest says: rebuild it, then check it")
    return out
