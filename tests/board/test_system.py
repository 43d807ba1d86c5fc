"""scripts/setup_emulator.sh (board.system) as `make setup-system` runs it, against stand-in apt tools
that fail like a Debian mirror in mid-sync: partial lists written, exit 100."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from c2f_edge.board import emulator, kernel_runner, opencl, system
from c2f_edge.core import apt
from c2f_edge.core.errors import ToolchainError
from tests.fixtures.apt import MIRROR_SYNC, list_name

ROOT = Path(__file__).resolve().parents[2]


def _lists_holding_everything() -> dict[str, list[str]]:
    needs = system.needs()
    lists = {list_name(suite, "amd64"): list(needs.install) for suite in ("bookworm", "bookworm-updates")}
    lists.update({list_name("bookworm", arch): list(pkgs) for arch, pkgs in needs.download.items()})
    return lists


def setup_emulator(fake_apt, *args):
    return subprocess.run(["bash", str(ROOT / "scripts/setup_emulator.sh"), "--lists-dir", str(fake_apt.lists),
                           "--backoff", "0", *args],
                          capture_output=True, text=True, env={**os.environ, "PYTHON": sys.executable},
                          timeout=120, check=False)


def test_needs_cover_the_rootfs_roots_and_the_kernel_runner_libcs():
    needs = system.needs()
    # the dynamic qemu loads the counting plugin; PoCL and the OpenCL headers serve board.opencl
    assert needs.install == ("qemu-user-static", "qemu-user", *opencl.APT_PACKAGES)
    assert {"pocl-opencl-icd", "ocl-icd-opencl-dev", "opencl-headers"} <= set(needs.install)
    assert {"python3.11", "libstdc++6", "libc6"} <= set(needs.download["arm64"])
    assert set(needs.download["armhf"]) == {"libc6", "libgcc-s1", "gcc-12-base"}


def test_setup_survives_a_partial_update_when_the_needed_packages_resolve(fake_apt):
    fake_apt.set(updates=[{"rc": 100, "writes": _lists_holding_everything(), "stderr": MIRROR_SYNC}])
    proc = setup_emulator(fake_apt)
    assert proc.returncode == 0, proc.stderr
    assert len(fake_apt.calls("apt-get update")) == apt.ATTEMPTS  # retried, no more
    assert fake_apt.state()["installed"] == list(system.needs().install)
    assert sorted(fake_apt.state()["foreign"]) == ["arm64", "armhf"]
    assert "warning: apt-get update failed on bookworm-security/main/binary-armhf/Packages.xz" in proc.stderr
    assert "emulator prerequisites ok" in proc.stdout


def test_setup_fails_in_one_line_when_a_needed_package_is_missing(fake_apt):
    lists = _lists_holding_everything()
    lists[list_name("bookworm", "armhf")].remove("libgcc-s1")
    fake_apt.set(updates=[{"rc": 100, "writes": lists, "stderr": MIRROR_SYNC}])
    proc = setup_emulator(fake_apt, "--attempts", "2")
    assert proc.returncode == 2
    errors = [ln for ln in proc.stderr.splitlines() if not ln.startswith("apt-get update")]
    assert len(errors) == 1, proc.stderr
    assert errors[0].startswith("error: apt-get update failed on bookworm-security/main/binary-armhf/Packages.xz")
    assert "libgcc-s1:armhf" in errors[0] and "mirror" in errors[0]
    assert len(fake_apt.calls("apt-get update")) == 2
    assert fake_apt.calls("apt-get install") == []


def test_update_always_takes_the_newcomers_path_where_lists_exist(fake_apt):
    fake_apt.write_lists(_lists_holding_everything())
    fake_apt.set(foreign=["arm64", "armhf"], installed=list(system.needs().install))
    assert setup_emulator(fake_apt).returncode == 0
    assert fake_apt.calls("apt-get") == []  # all there: auto skips apt
    proc = setup_emulator(fake_apt, "--update", "always")
    assert proc.returncode == 0, proc.stderr
    assert len(fake_apt.calls("apt-get update")) == 1


def test_ci_runs_the_apt_step_with_update_always():
    assert "--update always" in (ROOT / ".ci/run").read_text()


# The unprivileged half: emulator.setup and kernel_runner.rootfs download .debs from the lists that
# the root half left (here: bookworm only, the security suite dropped by a mirror sync).

def test_the_kernel_runner_libc_resolves_without_the_security_lists(fake_apt, tmp_path, monkeypatch):
    monkeypatch.setenv("C2F_EDGE_CACHE", str(tmp_path / "cache"))
    fake_apt.write_lists({list_name("bookworm", "armhf"): list(kernel_runner.LIBC_PACKAGES)})
    root = kernel_runner.rootfs("armhf")
    assert sorted(p.name for p in (root / "lib").iterdir()) == sorted(kernel_runner.LIBC_PACKAGES)


def test_a_failed_libc_download_names_the_package_and_leaves_no_rootfs(fake_apt, tmp_path, monkeypatch):
    monkeypatch.setenv("C2F_EDGE_CACHE", str(tmp_path / "cache"))
    fake_apt.write_lists({list_name("bookworm", "armhf"): list(kernel_runner.LIBC_PACKAGES)})
    fake_apt.set(download_fails=["libgcc-s1:armhf"])
    with pytest.raises(ToolchainError, match=r"^apt-get download failed for libgcc-s1:armhf \(404"):
        kernel_runner.rootfs("armhf")
    assert not (tmp_path / "cache" / kernel_runner.CACHE / "rootfs-armhf").exists()


def test_a_failed_emulator_download_names_the_package_and_leaves_no_rootfs(fake_apt, tmp_path, monkeypatch):
    monkeypatch.setenv("C2F_EDGE_CACHE", str(tmp_path / "cache"))
    (fake_apt.bin / emulator.QEMU).symlink_to("/bin/true")  # check_prerequisites looks for it on PATH
    fake_apt.write_lists({list_name("bookworm", "arm64"): ["python3.11", "libstdc++6", "libc6", "libpython3.11"]})
    fake_apt.set(foreign=["arm64"], depends={"python3.11": ["libpython3.11", "libc6"], "libstdc++6": ["libc6"]},
                 download_fails=["libpython3.11:arm64"])
    with pytest.raises(ToolchainError, match=r"^apt-get download failed for libpython3.11:arm64 \(404"):
        emulator.setup(quiet=True)
    downloads = fake_apt.calls("apt-get download")
    assert len(downloads) == 1 and "libc6:arm64" in downloads[0].split()  # resolved from bookworm alone
    assert list((tmp_path / "cache").iterdir()) == []  # no emulator/, no half-unpacked temporary dir
