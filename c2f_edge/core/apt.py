"""The root part of setup: apt steps that survive a Debian mirror in mid-sync.

While a mirror syncs, `apt-get update` can fail on one index for minutes (`File has unexpected size
... Mirror sync in progress?`) and exit 100. apt then drops that suite's lists and keeps the others,
which usually hold everything setup needs. So an update is retried a few times, then judged by what
is needed (an install candidate for every package, the lists of every foreign architecture), not by
its exit code. Every apt step of the project goes through `ensure`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from c2f_edge.core.errors import ToolchainError

LISTS = Path("/var/lib/apt/lists")
ATTEMPTS = 3
BACKOFF = 5.0  # seconds before the second attempt, doubled after each further failure
FIX = ("wait a few minutes for the mirror to finish syncing and re-run `make setup-system`, "
       "or point apt at another mirror in /etc/apt/sources.list.d/")


@dataclass(frozen=True)
class Needs:
    """What a setup step takes from apt: host packages it installs, foreign packages it downloads."""

    install: tuple[str, ...] = ()
    download: dict[str, tuple[str, ...]] = field(default_factory=dict)  # Debian arch -> package names


@dataclass(frozen=True)
class Update:
    """How `apt-get update` went: attempts made, and the index that failed on the last one."""

    ok: bool
    attempts: int
    index: str = ""
    reason: str = ""

    def failure(self) -> str:
        return f"apt-get update failed on {self.index} ({self.reason})"


def failed_index(output: str) -> tuple[str, str]:
    """(index, reason) of the first `Failed to fetch` in apt-get update's output, else its last error."""
    m = re.search(r"Failed to fetch (\S+)\s+(.*)", output)
    if m:
        url, reason = m.groups()
        index = url.split("/dists/", 1)[-1]
        return index, re.sub(r"\s*\[IP: [^\]]*\]\s*$", "", reason).strip() or "no reason given"
    errors = [ln[3:].strip() for ln in output.splitlines() if ln.startswith(("E: ", "W: "))]
    return "an index", (errors[-1] if errors else "no error message")


def _run(cmd: list[str], root: bool = False, **kw) -> subprocess.CompletedProcess:
    if root and os.geteuid() != 0:
        if not shutil.which("sudo"):
            raise ToolchainError(f"`{' '.join(cmd)}` needs root: run setup as root, or install sudo")
        cmd = ["sudo", *cmd]
    return subprocess.run(cmd, capture_output=True, text=True, check=False,
                          env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"}, **kw)


def has_candidate(package: str) -> bool:
    """True if apt can install or download `package` (`name` or `name:arch`) from its current lists."""
    out = _run(["apt-cache", "policy", package]).stdout
    m = re.search(r"^\s*Candidate:\s*(\S+)", out, re.MULTILINE)
    return bool(m) and m.group(1) != "(none)"


def is_installed(package: str) -> bool:
    out = _run(["dpkg-query", "-W", "-f=${Status}", package]).stdout
    return out.strip().endswith("ok installed")


def has_lists(arch: str, lists: Path = LISTS) -> bool:
    return any(lists.glob(f"*_binary-{arch}_Packages*"))


def missing(needs: Needs, lists: Path = LISTS) -> list[str]:
    """What apt cannot serve now: packages without a candidate, foreign architectures without lists."""
    gaps = [f"{arch} package lists" for arch in needs.download if not has_lists(arch, lists)]
    gaps += [p for p in needs.install if not has_candidate(p)]
    gaps += [f"{p}:{arch}" for arch, pkgs in needs.download.items() for p in pkgs
             if not has_candidate(f"{p}:{arch}")]
    return gaps


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def update(attempts: int = ATTEMPTS, backoff: float = BACKOFF, log=_stderr, sleep=time.sleep,
           options: tuple[str, ...] = ()) -> Update:
    """`apt-get update`, retried up to `attempts` times with a doubling back-off. `options` (apt `-o`s) point
    it at lists of its own, which need no root."""
    result = Update(ok=False, attempts=0)
    for attempt in range(1, attempts + 1):
        log(f"apt-get update (attempt {attempt} of {attempts})")
        proc = _run(["apt-get", *options, "update", "-q"], root=not options)
        if proc.returncode == 0:
            return Update(ok=True, attempts=attempt)
        result = Update(False, attempt, *failed_index(proc.stdout + "\n" + proc.stderr))
        if attempt < attempts:
            log(f"{result.failure()}; retrying in {backoff:g} s")
            sleep(backoff)
            backoff *= 2
    return result


def add_architectures(archs) -> bool:
    """dpkg --add-architecture for each of `archs` not yet known; True if any was added."""
    known = set(_run(["dpkg", "--print-foreign-architectures"]).stdout.split())
    added = False
    for arch in archs:
        if arch not in known:
            proc = _run(["dpkg", "--add-architecture", arch], root=True)
            if proc.returncode:
                raise ToolchainError(f"dpkg --add-architecture {arch} failed: {proc.stderr.strip()[-200:]}")
            added = True
    return added


def ensure(needs: Needs, always_update: bool = False, lists: Path = LISTS, attempts: int = ATTEMPTS,
           backoff: float = BACKOFF, log=_stderr, sleep=time.sleep) -> Update | None:
    """Make apt able to serve `needs` and install its host packages. Returns the update made, if any.

    Updates when asked to (`always_update`, as CI does), when an architecture was added, when
    something is missing, or before an install (old lists may name versions the mirror dropped).
    Raises ToolchainError, one line, only when something needed is still missing after the update.
    """
    added = add_architectures(needs.download)
    to_install = [p for p in needs.install if not is_installed(p)]
    gaps = missing(needs, lists)
    done = None
    if always_update or added or gaps or to_install:
        done = update(attempts, backoff, log, sleep)
        gaps = missing(needs, lists)
    if gaps:
        what = ", ".join(gaps)
        if done is not None and not done.ok:
            raise ToolchainError(f"{done.failure()}, and apt has no {what}: {FIX}", hint="")
        raise ToolchainError(f"apt has no {what} although apt-get update succeeded: check that "
                             "/etc/apt/sources.list.d/ names a Debian 12 (bookworm) mirror with `main`", hint="")
    if done is not None and not done.ok:
        log(f"warning: {done.failure()} after {done.attempts} attempts; going on, because every package "
            f"needed has a candidate in the other lists")
    if to_install:
        log(f"apt-get install {' '.join(to_install)}")
        proc = _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *to_install], root=True)
        if proc.returncode:
            index, reason = failed_index(proc.stdout + "\n" + proc.stderr)
            raise ToolchainError(f"apt-get install {' '.join(to_install)} failed on {index} ({reason}): {FIX}",
                                 hint="")
    return done


def failed_package(output: str) -> str:
    """The package an `apt-get download` or `install` failed on, from its output ("" if it names none)."""
    m = re.search(r"Failed to fetch \S*/([^/_\s]+)_[^_/\s]+_([a-z0-9]+)\.deb", output)
    if m:
        return f"{m.group(1)}:{m.group(2)}"
    m = (re.search(r"Unable to locate package (\S+)", output)
         or re.search(r"candidate version from package (\S+)", output)
         or re.search(r"for '(\S+)' was not found", output))
    return m.group(1) if m else ""


def download(specs, dest: Path) -> list[Path]:
    """`apt-get download` of `specs` (`name:arch`) into `dest`; a failure is one line naming the package.

    Unprivileged: it reads the lists that `ensure` left, whichever suites they hold.
    """
    proc = _run(["apt-get", "download", "-q", *specs], cwd=dest)
    if proc.returncode:
        out = proc.stdout + "\n" + proc.stderr
        _, reason = failed_index(out)
        package = failed_package(out) or f"one of {len(specs)} packages"
        raise ToolchainError(f"apt-get download failed for {package} ({reason}): {FIX}", hint="")
    return sorted(dest.glob("*.deb"))


def unpack(debs, root: Path) -> None:
    """`dpkg-deb -x` every .deb into `root` (a rootfs; no maintainer scripts run)."""
    for deb in debs:
        proc = _run(["dpkg-deb", "-x", str(deb), str(root)])
        if proc.returncode:
            raise ToolchainError(f"{Path(deb).name} cannot be unpacked ({proc.stderr.strip()[-200:]}): "
                                 "a truncated download? re-run setup", hint="")


SOURCES = Path("/etc/apt")


def deb_src(sources: Path = SOURCES) -> dict[str, str]:
    """The system's `deb` sources as `deb-src` ones: file name -> text, for an apt config of our own."""
    out = {}
    files = [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*.list")),
             *sorted((sources / "sources.list.d").glob("*.sources"))]
    for f in files:
        if not f.is_file():
            continue
        if f.suffix == ".sources":  # deb822 stanzas
            text = re.sub(r"^Types:.*$", "Types: deb-src", f.read_text(), flags=re.MULTILINE)
        else:
            text = "\n".join(re.sub(r"^deb(\s)", r"deb-src\1", ln) for ln in f.read_text().splitlines()
                             if ln.startswith("deb ")) + "\n"
        out[f.name] = text
    return out


def source_file(package: str, version: str, member: str, dest: Path, *, attempts: int = ATTEMPTS,
                backoff: float = BACKOFF, log=_stderr, sleep=time.sleep, sources: Path = SOURCES) -> Path:
    """One file of a Debian source package, e.g. qemu's `include/qemu/qemu-plugin.h`, copied to `dest`.

    apt reads deb-src lists of its own, in a temporary directory, made from the system's sources: the
    system's apt config and lists stay as they are, and no root is needed. A partial update is judged by
    whether the version asked for is listed, as `ensure` does.
    """
    import tarfile
    import tempfile

    with tempfile.TemporaryDirectory(prefix="c2f-apt-src-") as tmp:
        tmp = Path(tmp)
        for d in ("parts", "lists/partial", "cache/archives/partial", "get"):
            (tmp / d).mkdir(parents=True)
        for name, text in deb_src(sources).items():
            (tmp / "parts" / name).write_text(text)
        opts = ("-o", "Dir::Etc::sourcelist=/dev/null", "-o", f"Dir::Etc::sourceparts={tmp / 'parts'}",
                "-o", f"Dir::State::Lists={tmp / 'lists'}", "-o", f"Dir::Cache={tmp / 'cache'}")
        done = update(attempts, backoff, log, sleep, options=opts)
        listed = _run(["apt-cache", *opts, "showsrc", package]).stdout
        if f"Version: {version}\n" not in listed + "\n":
            why = f"{done.failure()}, and" if not done.ok else "although apt-get update succeeded,"
            raise ToolchainError(f"{why} no deb-src list has {package} {version}: {FIX}", hint="")
        log(f"apt-get source --download-only {package}={version}")
        proc = _run(["apt-get", *opts, "source", "--download-only", "-q", f"{package}={version}"], cwd=tmp / "get")
        if proc.returncode:
            _, reason = failed_index(proc.stdout + "\n" + proc.stderr)
            raise ToolchainError(f"apt-get source {package}={version} failed ({reason}): {FIX}", hint="")
        for archive in sorted((tmp / "get").glob("*.orig.tar.*")):
            with tarfile.open(archive) as tar:
                for m in tar:
                    if m.isfile() and m.name.split("/", 1)[-1] == member:
                        part = dest.with_name(f".{dest.name}.tmp")
                        dest.parent.mkdir(parents=True, exist_ok=True)
                        part.write_bytes(tar.extractfile(m).read())
                        os.replace(part, dest)
                        return dest
        raise ToolchainError(f"{member} is not in the source of {package} {version}", hint="")
