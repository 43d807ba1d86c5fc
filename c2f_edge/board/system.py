"""The root part of the local boards' setup (scripts/setup_emulator.sh runs it as root).

It installs qemu-user-static and the dynamic qemu-user (the one that loads the instruction-counting plugin,
board.insn_count), and makes apt able to download what the unprivileged half fetches: the aarch64 board's
rootfs (board.emulator) and the ARM libcs the kernel runner runs against (board.kernel_runner). For the
local OpenCL device it installs PoCL behind the ICD loader, and the headers our OpenCL runtime for TVM
builds against (board.opencl). Through core.apt, so a mirror in mid-sync does not stop it.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from c2f_edge.board import emulator, kernel_runner, opencl
from c2f_edge.core import apt
from c2f_edge.core.errors import C2FError, report


def needs() -> apt.Needs:
    arm64 = (*emulator.DEBIAN_ROOTS, *kernel_runner.LIBC_PACKAGES)
    # qemu-user: the dynamic build, the only one that loads TCG plugins (board.insn_count); beside -static.
    return apt.Needs(install=("qemu-user-static", "qemu-user", *opencl.APT_PACKAGES),
                     download={"arm64": tuple(dict.fromkeys(arm64)), "armhf": kernel_runner.LIBC_PACKAGES})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="scripts/setup_emulator.sh",
        description="Root part of the local boards: install qemu-user-static and qemu-user (the "
                    "dynamic build, which loads the instruction-counting plugin) and PoCL with the OpenCL "
                    "headers (the local OpenCL device), add the arm64 and armhf apt architectures and "
                    "their package lists. apt-get update is retried, then "
                    "judged by whether every package needed has an install candidate: a mirror in "
                    "mid-sync that breaks one index does not stop setup.")
    p.add_argument("--update", choices=["auto", "always"], default="auto",
                   help="auto: apt-get update only if something is missing or to be installed; "
                        "always: update even when the lists are there (CI does, to take a newcomer's path)")
    p.add_argument("--attempts", type=int, default=apt.ATTEMPTS, help="apt-get update attempts (default: %(default)s)")
    p.add_argument("--backoff", type=float, default=apt.BACKOFF,
                   help="seconds before the 2nd attempt, doubled after each failure (default: %(default)s)")
    p.add_argument("--lists-dir", type=Path, default=apt.LISTS, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.attempts < 1:
        p.error("--attempts must be at least 1")
    try:
        apt.ensure(needs(), always_update=a.update == "always", lists=a.lists_dir, attempts=a.attempts,
                   backoff=a.backoff)
    except C2FError as e:
        return report(e)
    qemu = shutil.which(emulator.QEMU)
    version = (subprocess.run([qemu, "--version"], capture_output=True, text=True, check=False).stdout
               .strip().splitlines() or ["?"])[0] if qemu else f"{emulator.QEMU} not on PATH"
    print(f"emulator prerequisites ok: {version}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
