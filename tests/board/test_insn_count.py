"""The instruction-count plugin under the dynamic qemu-aarch64: exact counts of a known loop, per class, and
markers that bracket exactly the region between them (tests/data/insn_count_program.c)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from c2f_edge.board import insn_count
from c2f_edge.core.errors import ArtifactError

PROGRAM = Path(__file__).resolve().parents[1] / "data" / "insn_count_program.c"
LOOP_BODY = 19  # instructions per iteration of the program's loop
STOP_MARKER = 4  # mov, movz, movk, svc: the stop marker's instructions are inside the region
PER_ITERATION = {"fma_f32x4": 2, "fma_f16x8": 1, "fma_f16x4": 1, "fma_f32x2": 1, "neon_other": 1, "neon_load": 3,
                 "neon_store": 1, "fp_scalar": 2, "load": 3, "store": 1, "branch": 1, "other": 2}

needs_qemu = pytest.mark.skipif(not shutil.which(insn_count.QEMU),
                                reason="the dynamic qemu-aarch64 (Debian qemu-user) is not installed: run "
                                       "scripts/setup_emulator.sh")


@pytest.fixture(scope="module")
def program():
    """The program for aarch64 glibc (zig's libc cache for it is warmed at setup; musl would cost a minute),
    and the emulated board's rootfs to run it against."""
    from c2f_edge.backend.crosslink import zig_env
    from c2f_edge.board import emulator
    from c2f_edge.core import native

    exe = native.build("insn-count-program", [PROGRAM],
                       [sys.executable, "-m", "ziglang", "cc", "-target", "aarch64-linux-gnu"],
                       ["-O1", "-mcpu=cortex_a76"], env=zig_env(), hint="pip install ziglang")  # a76: fp16 FMAs
    return exe, emulator.setup(quiet=True).rootfs


def count(program, tmp_path, *args, cpu="cortex-a76") -> dict:
    exe, rootfs = program
    out = tmp_path / f"profile-{'-'.join(args)}.bin"
    proc = subprocess.run(insn_count.command([str(exe), *args], out, cpu=cpu, rootfs=rootfs), capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    return insn_count.summarize(insn_count.read_profile(out))


@needs_qemu
def test_a_known_loop_is_counted_exactly_in_every_class(program, tmp_path):
    n = 1000
    got = count(program, tmp_path, str(n), "1")
    assert got["regions"] == 1
    assert got["instructions"] == LOOP_BODY * n + STOP_MARKER
    want = {name: n * PER_ITERATION.get(name, 0) for name in insn_count.CLASSES}
    want["other"] += STOP_MARKER
    assert got["classes"] == want
    assert got["neon_load_bytes"] == 64 * n and got["neon_store_bytes"] == 32 * n
    assert got["fma_lanes"] == (2 * 4 + 8 + 4 + 2) * n


@needs_qemu
def test_the_markers_bracket_exactly_the_region_between_them(program, tmp_path):
    """The program works before, between and after its regions; none of it is counted, and regions add up."""
    one, two = count(program, tmp_path, "500", "1"), count(program, tmp_path, "1000", "1")
    assert one["instructions"] == LOOP_BODY * 500 + STOP_MARKER
    assert two["instructions"] == LOOP_BODY * 1000 + STOP_MARKER
    three = count(program, tmp_path, "500", "3")
    assert three["regions"] == 3 and three["instructions"] == 3 * one["instructions"]
    none = count(program, tmp_path, "500", "0")
    assert none["regions"] == 0 and none["instructions"] == 0


@needs_qemu
def test_split_writes_each_region_apart(program, tmp_path):
    """A tuning batch counts many kernels in one qemu run: split=1 writes every region to its own file."""
    exe, rootfs = program
    out = tmp_path / "split.bin"
    proc = subprocess.run(insn_count.command([str(exe), "500", "3"], out, rootfs=rootfs, split=True),
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    whole = insn_count.read_profile(out)
    assert whole.regions == 3 and len(whole.address) == 0
    regions = insn_count.read_regions(out)
    assert [insn_count.summarize(r)["instructions"] for r in regions] == [LOOP_BODY * 500 + STOP_MARKER] * 3
    assert all(r.regions == 1 for r in regions)


@needs_qemu
def test_counts_do_not_depend_on_the_emulated_core(program, tmp_path):
    assert count(program, tmp_path, "300", "1", cpu="cortex-a76")["classes"] == \
        count(program, tmp_path, "300", "1", cpu="max")["classes"]


def test_classify_decodes_words_of_each_class():
    words = {0x4E22CC20: "fma_f32x4",  # fmla v0.4s, v1.4s, v2.4s
             0x4FAE11AC: "fma_f32x4",  # fmla v12.4s, v13.4s, v14.s[1]
             0x4E450C83: "fma_f16x8",  # fmla v3.8h, v4.8h, v5.8h
             0x0E480CE6: "fma_f16x4",  # fmla v6.4h, v7.4h, v8.4h
             0x0EABCD49: "fma_f32x2",  # fmls v9.2s, v10.2s, v11.2s
             0x4E31D60F: "neon_other",  # fadd v15.4s, v16.4s, v17.4s
             0x1E382AF6: "fp_scalar",  # fadd s22, s23, s24
             0xD4000001: "other",  # svc #0
             0xD503201F: "other",  # nop
             0x14000000: "branch",  # b .
             0x91000400: "other"}  # add x0, x0, #1
    cls, nbytes = insn_count.classify(np.array(list(words), np.uint32))
    assert [insn_count.CLASSES[c] for c in cls] == list(words.values())
    assert not nbytes.any()


def test_a_missing_or_foreign_profile_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match="is not an instruction profile"):
        insn_count.read_profile(tmp_path / "none.bin")
    (tmp_path / "bad.bin").write_bytes(b"C2FB" + (7).to_bytes(4, "little") + bytes(8))
    with pytest.raises(ArtifactError, match="profile version 7"):
        insn_count.read_profile(tmp_path / "bad.bin")


def test_counting_never_downloads_the_header(tmp_path, monkeypatch):
    """Only setup fetches qemu's plugin header; without it a count stops with the command that sets it up."""
    from c2f_edge.core.errors import ToolchainError

    if not shutil.which("dpkg-query") or subprocess.run(["dpkg-query", "-W", insn_count.QEMU_PACKAGE],
                                                        capture_output=True, check=False).returncode:
        pytest.skip("qemu-user is not installed: make setup-system")
    monkeypatch.setenv("C2F_EDGE_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr(insn_count.apt, "source_file", lambda *a, **k: pytest.fail("downloaded at run time"))
    with pytest.raises(ToolchainError, match="plugin header .* is not set up") as e:
        insn_count.plugin()
    assert "make setup-system" in e.value.hint
