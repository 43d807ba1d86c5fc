"""Reading and rewriting the module table of a bundle's model.so."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from c2f_edge.backend import bundle_file
from c2f_edge.core.errors import ArtifactError, UnsupportedError


def test_blob_roundtrip_and_vm_bytes(tiny_bundle):
    data = (tiny_bundle / "model.so").read_bytes()
    blob = bundle_file.read_blob(data)
    assert blob.modules[0][0] == bundle_file.VM_KIND
    assert bundle_file.LIB_KIND in [k for k, _ in blob.modules]
    enc = blob.encode()
    assert data[blob.offset:blob.offset + len(enc)] == enc  # parse + encode is lossless
    assert len(bundle_file.vm_executable_bytes(tiny_bundle / "model.so")) > 1000


def test_kernel_library_exposes_kernels(tiny_bundle, tmp_path):
    out = bundle_file.kernel_library(tiny_bundle / "model.so", tmp_path / "k.so")
    assert out.stat().st_size == (tiny_bundle / "model.so").stat().st_size
    assert bundle_file.read_blob(out.read_bytes()).modules[0][0] == bundle_file.LIB_KIND
    # Load in a fresh process: the original root module is a VM executable without kernel names,
    # the rewritten one is the kernel library itself.
    code = ("import sys, tvm; a = tvm.runtime.load_module(sys.argv[1]); b = tvm.runtime.load_module(sys.argv[2]);"
            "print(a.kind, b.kind, a.implements_function('matmul'), b.implements_function('matmul'))")
    r = subprocess.run([sys.executable, "-c", code, str(tiny_bundle / "model.so"), str(out)],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["relax.VMExecutable", "library", "False", "True"]


def test_not_elf_and_no_symbol(tmp_path):
    p = tmp_path / "x.so"
    p.write_bytes(b"MZ" + b"\0" * 200)
    with pytest.raises(UnsupportedError):
        bundle_file.vm_executable_bytes(p)
    elf = tmp_path / "plain.so"
    elf.write_bytes(Path(os.path.realpath(sys.executable)).read_bytes())  # an ELF without the symbol
    with pytest.raises(ArtifactError, match="__tvm_ffi__library_bin"):
        bundle_file.vm_executable_bytes(elf)
