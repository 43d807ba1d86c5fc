"""Cross-linking without a system toolchain: zig from PyPI, --cross-compiler, and clear errors."""

from __future__ import annotations

import pytest

from c2f_edge.backend import crosslink, targets
from c2f_edge.core.errors import ToolchainError


def _tiny_module(target_json):
    """A one-kernel TVM module: links in seconds, so the linker is tested apart from the model."""
    import tvm
    from tvm import te

    a = te.placeholder((16,), name="a")
    b = te.compute((16,), lambda i: a[i] * 2.0, name="b")
    return tvm.compile(te.create_prim_func([a, b]), target=tvm.target.Target(target_json))


@pytest.mark.slow
@pytest.mark.parametrize("name,arch", [("arm64", "aarch64"), ("armv7", "arm32")])
def test_zig_links_arm_shared_objects(tmp_path, name, arch):
    spec = targets.get(name)
    linker = crosslink.linker_for(spec)
    assert linker.cmd[1:4] == ["-m", "ziglang", "cc"]  # a list of command words, which TVM's own helper mangles
    out = tmp_path / "k.so"
    _tiny_module(spec.to_json()).export_library(str(out), fcompile=linker)
    assert crosslink.elf_arch(out) == arch


@pytest.mark.slow
def test_cross_compiler_command_links(tmp_path):
    """--cross-compiler takes a whole command line (here zig's, standing in for aarch64-linux-gnu-g++)."""
    import shlex
    import sys

    spec = targets.get("arm64")
    linker = crosslink.linker_for(spec, shlex.join([sys.executable, "-m", "ziglang", "cc", "-target",
                                                    "aarch64-linux-gnu"]))
    linker.env = crosslink.zig_env()  # only so that zig reuses its cache
    out = tmp_path / "k.so"
    _tiny_module(spec.to_json()).export_library(str(out), fcompile=linker)
    assert crosslink.elf_arch(out) == "aarch64"


def test_zig_cache_is_stable_and_configurable(tmp_path, monkeypatch):
    monkeypatch.setenv("C2F_EDGE_CACHE", str(tmp_path))
    monkeypatch.delenv("ZIG_GLOBAL_CACHE_DIR", raising=False)
    env = crosslink.zig_env()
    assert env["ZIG_GLOBAL_CACHE_DIR"] == str(tmp_path / "zig")
    assert (tmp_path / "zig").is_dir()
    assert crosslink.linker_for(targets.get("arm64")).env["ZIG_GLOBAL_CACHE_DIR"] == str(tmp_path / "zig")


def test_cross_compiler_option(monkeypatch):
    spec = targets.get("arm64")
    linker = crosslink.linker_for(spec, "cc -O2")  # any compiler on PATH; words split like a shell
    assert linker.cmd[0].endswith("/cc") and linker.cmd[1:] == ["-O2"]
    with pytest.raises(ToolchainError, match="not on PATH") as e:
        crosslink.linker_for(spec, "aarch64-no-such-g++")
    assert "apt-get install g++-aarch64-linux-gnu" in e.value.hint
    with pytest.raises(ToolchainError) as e:
        crosslink.linker_for(targets.get("armv7"), "/no/such/arm-linux-gnueabihf-g++")
    assert "g++-arm-linux-gnueabihf" in e.value.hint


def test_missing_ziglang_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: None if n == "ziglang" else real(n, *a))
    with pytest.raises(ToolchainError, match="ziglang package is not installed") as e:
        crosslink.linker_for(targets.get("arm64"))
    assert "pip install ziglang" in e.value.hint and "g++-aarch64-linux-gnu" in e.value.hint


def test_android_needs_the_ndk(tmp_path, monkeypatch):
    monkeypatch.delenv("ANDROID_NDK_HOME", raising=False)
    monkeypatch.delenv("ANDROID_NDK_ROOT", raising=False)
    spec = targets.get("android-arm64")
    with pytest.raises(ToolchainError, match="ANDROID_NDK_HOME is not set"):
        crosslink.linker_for(spec)
    # A fake NDK layout is found.
    bin_dir = tmp_path / "toolchains/llvm/prebuilt/linux-x86_64/bin"
    bin_dir.mkdir(parents=True)
    clang = bin_dir / "aarch64-linux-android24-clang++"
    clang.write_text("#!/bin/sh\n")
    monkeypatch.setenv("ANDROID_NDK_HOME", str(tmp_path))
    assert crosslink.linker_for(spec).cmd == [str(clang)]


def test_failed_link_is_a_toolchain_error(tmp_path):
    linker = crosslink.Linker(["false"], name="false")
    with pytest.raises(ToolchainError, match="false failed to link x.so"):
        linker(str(tmp_path / "x.so"), [str(tmp_path / "a.o")])


def test_elf_arch(tmp_path):
    import sys

    assert crosslink.elf_arch(sys.executable) == "x86_64"
    (tmp_path / "t").write_bytes(b"not an elf file at all")
    assert crosslink.elf_arch(tmp_path / "t") == "not-elf"
