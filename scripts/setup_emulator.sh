#!/usr/bin/env bash
# Root part of the emulated boards: qemu-user-static and the arm64 and armhf apt architectures (the
# aarch64 board's rootfs, and the libc that armv7 kernels run against: c2f_edge/board/kernel_runner.py).
# Idempotent. apt-get update is retried and judged by what is needed, so a mirror in mid-sync does not
# stop it (c2f_edge/core/apt.py); --help lists the options. The unprivileged part (download arm64
# .debs, unpack a rootfs, install aarch64 wheels) is `python -m c2f_edge.board.emulator setup`.
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
[ -x "$python" ] || { echo "error: $python not found: run \`make setup\` first, or set PYTHON" >&2; exit 1; }
exec "$python" -m c2f_edge.board.system "$@"
