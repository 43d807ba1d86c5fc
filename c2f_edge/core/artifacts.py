"""Manifests, hashes and atomic artifact directories shared by every pipeline stage."""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

MANIFEST = "manifest.json"
MANIFEST_SCHEMA = 1

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_TOOL_PACKAGES = (
    "torch", "onnx", "onnxsim", "onnxruntime", "onnxscript", "apache-tvm", "apache-tvm-ffi",
    "coremltools", "numpy",
)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: str | os.PathLike) -> str:
    """Hash of a directory (e.g. an .mlpackage): relative names and contents, in sorted order."""
    root = Path(path)
    if root.is_file():
        return sha256_file(root)
    h = hashlib.sha256()
    for p in sorted(q for q in root.rglob("*") if q.is_file()):
        h.update(str(p.relative_to(root)).encode())
        h.update(sha256_file(p).encode())
    return h.hexdigest()


def tool_versions(extra: tuple[str, ...] = ()) -> dict[str, str | None]:
    from c2f_edge import __version__

    out: dict[str, str | None] = {"c2f-edge": __version__, "python": platform.python_version()}
    for name in _TOOL_PACKAGES + tuple(extra):
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()


# The tensor names at every artifact's boundary (the ONNX file's, the bundle's, the .mlpackage's).
INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def input_spec(shape, name: str = INPUT_NAME, dtype: str = "float32") -> dict:
    return {
        "name": name,
        "shape": list(shape),
        "dtype": dtype,
        "layout": "NCHW",
        "normalization": {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "scale": "1/255"},
    }


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Write JSON atomically (temp file in the same dir, then rename)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False, default=str)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def read_manifest(artifact_dir: str | os.PathLike) -> dict:
    from c2f_edge.core.errors import ArtifactError

    path = Path(artifact_dir) / MANIFEST
    if not path.is_file():
        raise ArtifactError(f"no {MANIFEST} in {artifact_dir}", hint="point at a directory written by c2f-edge")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path} is not valid JSON ({e.msg})", hint="re-create the artifact") from e


def manifest_or_empty(artifact_dir: str | os.PathLike) -> dict:
    """The manifest, or {} when there is none or it does not parse (a file from elsewhere)."""
    from c2f_edge.core.errors import ArtifactError

    try:
        return read_manifest(artifact_dir)
    except ArtifactError:
        return {}


VERIFY_HASH_ENV = "C2F_EDGE_VERIFY_HASH"  # "0": skip (the CLI's --no-verify-hash sets it)


def check_hash(path: str | os.PathLike, recorded: str | None) -> None:
    """ArtifactError unless `path` (a file, or a directory such as an .mlpackage) has the sha256 its
    manifest recorded. Nothing to check when none was recorded, or when the check is turned off."""
    from c2f_edge.core.errors import ArtifactError

    if not recorded or os.environ.get(VERIFY_HASH_ENV) == "0":
        return
    path = Path(path)
    if sha256_tree(path) != recorded:
        raise ArtifactError(f"{path.name} does not match its manifest: modified or partly copied ({path})",
                            hint="rebuild or re-copy it; --no-verify-hash skips this check if you changed it "
                                 "on purpose")


def check_files(artifact_dir: str | os.PathLike, manifest: dict) -> None:
    """check_hash for every file the manifest lists under "files" (e.g. model.so, model.onnx)."""
    for name, info in (manifest.get("files") or {}).items():
        if isinstance(info, dict) and (Path(artifact_dir) / name).exists():
            check_hash(Path(artifact_dir) / name, info.get("sha256"))


def update_manifest(artifact_dir: str | os.PathLike, key: str, value) -> dict:
    """Add or replace one top-level section (e.g. a parity result) in an existing manifest."""
    data = read_manifest(artifact_dir)
    data[key] = value
    write_json(Path(artifact_dir) / MANIFEST, data)
    return data


def new_manifest(kind: str, **fields) -> dict:
    return {"schema": MANIFEST_SCHEMA, "kind": kind, "created": now_iso(), "host": platform.node(),
            "versions": tool_versions(), **fields}


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike):
    """Yield a temporary directory beside `final`; on success it replaces `final`, on error it is removed.

    So a failed stage never leaves a half-written artifact where the next stage would look for it.
    """
    from c2f_edge.core.errors import UsageError

    final = Path(final)
    if final.exists() and (not final.is_dir() or (any(final.iterdir()) and not (final / MANIFEST).exists())):
        # Only ever replace a directory that c2f-edge wrote itself.
        raise UsageError(f"{final} exists and is not a c2f-edge artifact directory",
                         hint="choose an empty or new --out directory")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
