#!/usr/bin/env bash
# Root part of the emulated boards: qemu-user-static and the arm64 and armhf apt architectures (the
# aarch64 board's rootfs, and the libc that armv7 kernels run against: c2f_edge/board/kernel_runner.py).
# Idempotent: skips what is already there. The unprivileged part (download arm64 .debs, unpack a
# rootfs, install aarch64 wheels) is `python -m c2f_edge.board.emulator setup` or c2f_edge.board.emulator.setup().
set -euo pipefail

SUDO=""
if [ "$(id -u)" != "0" ]; then
    command -v sudo >/dev/null || { echo "error: needs root (or sudo) to apt-get install" >&2; exit 1; }
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive

need_update=0
for arch in arm64 armhf; do
    if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
        $SUDO dpkg --add-architecture "$arch"
        need_update=1
    fi
    # apt-get download of foreign packages needs that architecture's package lists.
    if ! ls /var/lib/apt/lists/*_binary-"$arch"_Packages* >/dev/null 2>&1; then
        need_update=1
    fi
done
if ! command -v qemu-aarch64-static >/dev/null; then
    need_update=1
fi
if [ "$need_update" = 1 ]; then
    $SUDO apt-get update -qq
fi
if ! command -v qemu-aarch64-static >/dev/null; then
    $SUDO apt-get install -y -qq --no-install-recommends qemu-user-static
fi
echo "emulator prerequisites ok: $(qemu-aarch64-static --version | head -1)"
