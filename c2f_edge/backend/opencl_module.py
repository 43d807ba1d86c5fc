"""TVM's serialized "opencl" module, read without a device, and the GPU limits its kernels must fit.

The module (one entry of a bundle's module table, backend.bundle_file) is little-endian; a string is a
u64 length and its bytes:

    <format: str ("cl")> <n: u64> n x (<name: str> <FunctionInfo>) <source: str>
    FunctionInfo: <name: str> <u64 k> k x DLDataType (u8 code, u8 bits, u16 lanes)
                  <u64 t> t x <launch tag: str> <u64 e> e x i32

The same layout is what board/opencl_runtime.cc loads. A phone's GPU is far tighter than PoCL (2 MiB of
local memory and 4,096 work items per group here), so what PoCL cannot catch is checked against the
target's own limits: local memory declared per kernel and arguments per kernel, from this module, and
work items per group from the launches our runtime saw (board.opencl.launches).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from pathlib import Path

from c2f_edge.core.errors import ArtifactError

KIND = "opencl"  # its kind in a bundle's module table

# Bytes of the OpenCL C scalar and vector types TVM declares in local memory.
_SCALAR_BYTES = {"char": 1, "uchar": 1, "short": 2, "ushort": 2, "half": 2, "int": 4, "uint": 4, "float": 4,
                 "long": 8, "ulong": 8, "double": 8}
_LOCAL = re.compile(r"__local\s+(?:volatile\s+)?(\w+?)(\d*)\s+\w+\[(\d+)\]")
# A kernel's definition as TVM writes it: from `__kernel void NAME(...) {` to its closing brace at column 0.
_KERNEL = re.compile(r"^__kernel\s+void\s+(\w+)\s*\([^)]*\)\s*\{.*?^\}", re.DOTALL | re.MULTILINE)


@dataclass(frozen=True)
class Kernel:
    name: str
    args: int  # buffers and scalars, then one launch size per tag
    launch_tags: tuple[str, ...]
    local_bytes: int  # local memory its source declares


def module_bytes(so_path: str | Path) -> bytes:
    """The serialized opencl module inside a bundle's model.so."""
    from c2f_edge.backend.bundle_file import read_blob

    found = [data for kind, data in read_blob(Path(so_path).read_bytes()).modules if kind == KIND]
    if not found:
        raise ArtifactError(f"{so_path} holds no OpenCL module", hint="compile it with --target mali or adreno")
    return found[0]


def _local_bytes(body: str) -> int:
    total = 0
    for scalar, lanes, count in _LOCAL.findall(body):
        total += _SCALAR_BYTES.get(scalar, 4) * int(lanes or 1) * int(count)
    return total


def kernel_sources(source: str) -> dict[str, str]:
    """Each kernel's definition (signature and body) in a module's OpenCL C source, by name."""
    return {m.group(1): m.group(0) for m in _KERNEL.finditer(source)}


def read(data: bytes) -> tuple[dict[str, Kernel], str]:
    """(kernels by name, OpenCL C source) of a serialized opencl module."""
    pos = 0

    def u64() -> int:
        nonlocal pos
        v, = struct.unpack_from("<Q", data, pos)
        pos += 8
        return v

    def string() -> str:
        nonlocal pos
        n = u64()
        s = data[pos:pos + n]
        if len(s) != n:
            raise struct.error("truncated")
        pos += n
        return s.decode()

    try:
        fmt = string()
        table = []
        for _ in range(u64()):
            string()  # the key (the kernel's name again)
            name = string()
            nargs = u64()
            pos += 4 * nargs
            tags = tuple(string() for _ in range(u64()))
            extra = u64()  # not `pos += 4 * u64()`: that adds to pos as it was before the read
            pos += 4 * extra
            table.append((name, nargs, tags))
        source = string()
    except (struct.error, UnicodeDecodeError) as e:
        raise ArtifactError(f"cannot parse the OpenCL module ({e})", hint="re-run `c2f-edge compile`") from e
    if fmt != "cl":
        raise ArtifactError(f"the OpenCL module holds {fmt!r}, not OpenCL C source", hint="re-run `c2f-edge compile`")
    bodies = kernel_sources(source)
    kernels = {name: Kernel(name, nargs + len(tags), tags, _local_bytes(bodies.get(name, "")))
               for name, nargs, tags in table}
    return kernels, source


def limits(kernels: dict[str, Kernel], target: dict, launches: dict[str, int] | None = None) -> dict:
    """Each limit of the target (TVM's resolved attributes) against the largest use among the kernels:
    {limit: {"used", "limit", "kernel", "share"}}; work items per group only when launches are known."""
    used = {"local memory (bytes)": ("max_shared_memory_per_block", {k.name: k.local_bytes for k in kernels.values()}),
            "kernel arguments": ("max_function_args", {k.name: k.args for k in kernels.values()})}
    if launches:
        used["work items per group"] = ("max_threads_per_block", dict(launches))
    out = {}
    for what, (attr, per_kernel) in used.items():
        if attr not in target or not per_kernel:
            continue
        kernel = max(per_kernel, key=per_kernel.get)
        limit = int(target[attr])
        out[what] = {"used": int(per_kernel[kernel]), "limit": limit, "kernel": kernel,
                     "share": round(per_kernel[kernel] / limit, 3) if limit else None}
    return out


def over(checked: dict) -> list[str]:
    """The limits exceeded, as readable strings."""
    return [f"{c['kernel']} needs {c['used']} {what}, the target allows {c['limit']}"
            for what, c in checked.items() if c["limit"] and c["used"] > c["limit"]]
