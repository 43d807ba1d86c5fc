"""Read the module table that TVM packs into a compiled bundle (`model.so`), without loading it.

A Relax bundle is one ELF shared object. Its `__tvm_ffi__library_bin` symbol holds a blob:

    <nbytes: u64> <indptr: vec<u64>> <children: vec<u64>> (<kind: str> [<bytes: str>])*

(vec = u64 count + items, str = u64 length + bytes). Module 0 is the root (the VM executable); the
"_lib" entry stands for the shared object's own compiled kernels. Two uses here:

- `vm_executable_bytes`: the VM bytecode, so the client can replay `main` to learn every kernel call
  and its argument shapes, even for a bundle built for another CPU.
- `kernel_library`: the same .so with the blob rewritten so that "_lib" is the root. Loaded on the
  board, its kernels are then found by name (TVM's time evaluator does not search imports), while
  device modules (e.g. OpenCL) stay imported. The blob keeps its size, so nothing else moves.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from c2f_edge.core.errors import ArtifactError, UnsupportedError

BLOB_SYMBOL = b"__tvm_ffi__library_bin"
LIB_KIND = "_lib"
VM_KIND = "relax.VMExecutable"


@dataclass
class LibraryBlob:
    offset: int  # file offset of the blob (its u64 size field)
    indptr: list[int]
    children: list[int]
    modules: list[tuple[str, bytes | None]]  # (kind, serialized bytes; None for "_lib")

    def encode(self) -> bytes:
        out = [struct.pack("<Q", len(self.indptr)), struct.pack(f"<{len(self.indptr)}Q", *self.indptr),
               struct.pack("<Q", len(self.children)), struct.pack(f"<{len(self.children)}Q", *self.children)]
        for kind, data in self.modules:
            out.append(struct.pack("<Q", len(kind)) + kind.encode())
            if data is not None:
                out.append(struct.pack("<Q", len(data)) + data)
        body = b"".join(out)
        return struct.pack("<Q", len(body)) + body


@dataclass(frozen=True)
class Symbol:
    name: str
    value: int  # address in the shared object (before the loader's bias)
    size: int
    is_function: bool
    file_offset: int  # where its bytes are in the file (-1 if it has none)


def symbols(data: bytes) -> list[Symbol]:
    """The defined symbols (.symtab and .dynsym) of a little-endian ELF32/ELF64 shared object."""
    if data[:4] != b"\x7fELF":
        raise UnsupportedError("the bundle's model.so is not an ELF shared object",
                               hint="per-op profiling reads ELF bundles (Linux/Android); run without --per-op")
    is64 = data[4] == 2
    if data[5] != 1:
        raise UnsupportedError("big-endian ELF bundles are not supported", hint="run without --per-op")
    if is64:
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
        sec_fmt, sym_fmt, sym_size = "<IIQQQQIIQQ", "<IBBHQQ", 24
    else:
        shoff, = struct.unpack_from("<I", data, 0x20)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x2E)
        sec_fmt, sym_fmt, sym_size = "<IIIIIIIIII", "<IIIBBH", 16
    sections = [struct.unpack_from(sec_fmt, data, shoff + i * shentsize) for i in range(shnum)]
    # (name, type, flags, addr, offset, size, link, info, align, entsize)
    out = []
    for sec in sections:
        if sec[1] not in (2, 11):  # SHT_SYMTAB, SHT_DYNSYM
            continue
        strtab = sections[sec[6]]
        for off in range(sec[4], sec[4] + sec[5], sym_size):
            if is64:
                st_name, info, _other, shndx, value, size = struct.unpack_from(sym_fmt, data, off)
            else:
                st_name, value, size, info, _other, shndx = struct.unpack_from(sym_fmt, data, off)
            if not 0 < shndx < len(sections):
                continue
            start = strtab[4] + st_name
            name = data[start:data.index(b"\0", start)].decode(errors="replace")
            target = sections[shndx]
            fileoff = value - target[3] + target[4] if target[1] != 8 else -1  # SHT_NOBITS: no bytes
            out.append(Symbol(name, value, size, info & 0xF == 2, fileoff))  # STT_FUNC
    return out


def _symbol_file_offset(data: bytes, name: bytes) -> int:
    """File offset of a symbol's data in a little-endian ELF32/ELF64 shared object."""
    for sym in symbols(data):
        if sym.name == name.decode():
            return sym.file_offset
    raise ArtifactError(f"no {name.decode()} symbol in the bundle's model.so",
                        hint="the file was not written by TVM's export_library; re-run `c2f-edge compile`")


def read_blob(data: bytes) -> LibraryBlob:
    offset = _symbol_file_offset(data, BLOB_SYMBOL)
    pos = offset

    def u64() -> int:
        nonlocal pos
        v, = struct.unpack_from("<Q", data, pos)
        pos += 8
        return v

    def vec() -> list[int]:
        n = u64()
        return [u64() for _ in range(n)]

    def string() -> bytes:
        nonlocal pos
        n = u64()
        s = data[pos:pos + n]
        pos += n
        return s

    try:
        nbytes = u64()
        end = pos + nbytes
        indptr, children = vec(), vec()
        modules = []
        for _ in range(len(indptr) - 1):
            kind = string().decode()
            modules.append((kind, None if kind == LIB_KIND else string()))
    except (struct.error, UnicodeDecodeError) as e:
        raise ArtifactError(f"cannot parse the module table in model.so ({e})",
                            hint="re-run `c2f-edge compile`") from e
    if pos != end:
        raise ArtifactError("the module table in model.so has an unexpected size",
                            hint="this TVM version packs modules differently; run without --per-op")
    return LibraryBlob(offset, indptr, children, modules)


def vm_executable_bytes(so_path: str | Path) -> bytes:
    blob = read_blob(Path(so_path).read_bytes())
    if not blob.modules or blob.modules[0][0] != VM_KIND:
        raise ArtifactError(f"{so_path} is not a Relax VM bundle (root module: "
                            f"{blob.modules[0][0] if blob.modules else 'none'})",
                            hint="compile with `c2f-edge compile`")
    return blob.modules[0][1]


def kernel_library(so_path: str | Path, out_path: str | Path) -> Path:
    """Write a copy of the bundle whose root module is its own kernel library ("_lib")."""
    data = bytearray(Path(so_path).read_bytes())
    blob = read_blob(bytes(data))
    kinds = [k for k, _ in blob.modules]
    if LIB_KIND not in kinds:
        raise ArtifactError("the bundle has no compiled kernel library", hint="re-run `c2f-edge compile`")
    lib = kinds.index(LIB_KIND)
    order = [lib] + [i for i in range(len(kinds)) if i != lib]  # new position -> old index
    new_index = {old: new for new, old in enumerate(order)}
    indptr, children = [0], []
    for old in order:
        children += [new_index[c] for c in blob.children[blob.indptr[old]:blob.indptr[old + 1]]]
        indptr.append(len(children))
    new = LibraryBlob(blob.offset, indptr, children, [blob.modules[i] for i in order]).encode()
    old_len = len(blob.encode())
    if len(new) != old_len:  # same entries, permuted: the size cannot change
        raise AssertionError("rewritten module table changed size")
    data[blob.offset:blob.offset + old_len] = new
    out_path = Path(out_path)
    out_path.write_bytes(bytes(data))
    return out_path
