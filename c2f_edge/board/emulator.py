"""An emulated aarch64 board: a TVM RPC server running aarch64 Python under qemu-user-static.

Timings measured on this board are NOT latencies (emulation is 10-500x slower); its handle says
`emulated=True` so reports can label them. What it is good for: checking that a cross-compiled
aarch64 bundle loads and computes the right numbers, with no ARM hardware.

Setup (cached under ${C2F_EDGE_CACHE:-~/.cache/c2f-edge}/emulator/):
  root part, once:   scripts/setup_emulator.sh   (qemu-user-static, dpkg arm64 architecture)
  the rest:          python -m c2f_edge.board.emulator setup   (or emulator.setup())
Use:
  with rpc.tracker() as t, emulator.board(tracker=t, key="arm64-emu") as b:
      remote = rpc.connect(tracker=t.address, key=b.key)
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from c2f_edge.board.rpc import Service, free_port, run_dir, tracker_summary, wait_ready
from c2f_edge.core import apt
from c2f_edge.core.artifacts import atomic_dir, new_manifest, read_manifest, write_json
from c2f_edge.core.cache import cache_root
from c2f_edge.core.errors import ArtifactError, C2FError, ToolchainError, UsageError, report

QEMU = "qemu-aarch64-static"
DEFAULT_KEY = "arm64-emu"
# Roots of the arm64 rootfs; their dependencies are resolved with apt-cache.
DEBIAN_ROOTS = ("python3.11", "libstdc++6")
# Host-side tools that the Debian dependency closure drags in but an interpreter never needs.
DEBIAN_SKIP = {"dpkg", "tar", "install-info", "perl-base", "perl", "perl-modules-5.36", "readline-common",
               "media-types", "mime-support", "mailcap", "libtirpc-common"}
# Pinned like the host (pyproject.toml): apache-tvm-ffi 0.1.15.post2 segfaults.
# onnxruntime, ncnn: the peers whose aarch64 instructions scripts/bench_arm.py counts (ONNX Runtime's import
# needs an aarch64 /proc/cpuinfo: board.insn_count.prefix gives it one). ncnn 1.0.20250503 is the version
# of the probe the ARM-speed issue quotes.
WHEELS = ("apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post1", "numpy>=2.0,<2.5", "ml_dtypes",
          "typing_extensions", "onnxruntime==1.32.0", "ncnn==1.0.20250503")
WHEEL_PLATFORMS = ("manylinux_2_28_aarch64", "manylinux2014_aarch64", "manylinux_2_17_aarch64")
RECIPE = {"debian_roots": list(DEBIAN_ROOTS), "wheels": list(WHEELS), "python": "3.11", "schema": 1}
# import tvm under emulation takes ~6 s alone; on 2 shared cores allow much more.
READY_TIMEOUT = 180.0
SERVER_SCRIPT = Path(__file__).with_name("guest_server.py")


@dataclass(frozen=True)
class Emulator:
    """A ready aarch64 userland: run its Python with `command([...])` and `env()`."""

    root: Path

    @property
    def rootfs(self) -> Path:
        return self.root / "rootfs"

    @property
    def site(self) -> Path:
        return self.root / "site-packages"

    @property
    def python(self) -> Path:
        return self.rootfs / "usr" / "bin" / "python3.11"

    def command(self, args: list[str]) -> list[str]:
        return [shutil.which(QEMU) or QEMU, "-L", str(self.rootfs), str(self.python), *args]

    def env(self, extra: dict | None = None) -> dict:
        # The guest must not see the host's Python settings (PYTHONHOME/PYTHONPATH of x86 packages).
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env.update(PYTHONPATH=str(self.site), PYTHONNOUSERSITE="1", TVM_USE_RUNTIME_LIB="1",
                   QEMU_LD_PREFIX=str(self.rootfs))
        env.update(extra or {})
        return env

    def run(self, args: list[str], timeout: float = 300, **kw) -> subprocess.CompletedProcess:
        """Run the emulated Python to completion (e.g. `["-c", "import tvm"]`)."""
        return subprocess.run(self.command(args), env=self.env(), timeout=timeout, capture_output=True,
                              text=True, check=False, **kw)


def emulator_dir() -> Path:
    return cache_root() / "emulator"


SETUP_HINT = "run `sudo scripts/setup_emulator.sh` (installs qemu-user-static, adds the arm64 architecture)"


def check_qemu() -> None:
    if not shutil.which(QEMU):
        raise ToolchainError(f"{QEMU} not found on PATH", hint=f"apt-get install qemu-user-static, or {SETUP_HINT}")


def check_prerequisites() -> None:
    """Raise ToolchainError naming the fix for each missing host tool."""
    check_qemu()
    for tool in ("apt-get", "apt-cache", "dpkg", "dpkg-deb"):
        if not shutil.which(tool):
            raise ToolchainError(f"{tool} not found: the emulator rootfs is built from Debian arm64 packages",
                                 hint="build the emulator on a Debian or Ubuntu host")
    archs = subprocess.run(["dpkg", "--print-foreign-architectures"], capture_output=True, text=True,
                           check=False).stdout
    if "arm64" not in archs.split():
        raise ToolchainError("dpkg has no arm64 architecture, so arm64 packages cannot be downloaded",
                             hint=f"dpkg --add-architecture arm64 && apt-get update, or {SETUP_HINT}")
    probe = subprocess.run(["apt-cache", "show", "python3.11:arm64"], capture_output=True, text=True,
                           check=False)
    if probe.returncode != 0 or not probe.stdout.strip():
        raise ToolchainError("apt has no arm64 package lists (python3.11:arm64 unknown)",
                             hint=f"apt-get update, or {SETUP_HINT}")


def check_runs(spec) -> None:
    """Raise before a build whose bundle this board could not run: it is an aarch64 Linux (glibc) CPU,
    with no GPU; or when qemu, which it runs on, is missing (the rest it sets up on first use)."""
    triple = spec.triple or ""
    if spec.device != "CPU" or not (triple.startswith("aarch64") and triple.endswith("-gnu")):
        what = f"{spec.kind} GPU" if spec.device != "CPU" else triple or "this machine's"
        how = ("--verify local runs a bundle for this machine" if spec.runs_here else
               f"verify it on a {spec.name} board with --verify rpc://..., or pick an aarch64 Linux target "
               "(arm64, rpi4, rpi5, jetson-orin)")
        raise UsageError(f"--verify emulated: the emulated board is an aarch64 Linux CPU, and a {spec.name} "
                         f"bundle ({what} code) does not run there", hint=how)
    check_qemu()


def _is_ready(root: Path) -> bool:
    try:
        m = read_manifest(root)
    except ArtifactError:
        return False
    return (m.get("kind") == "emulator" and m.get("recipe") == RECIPE
            and (root / "rootfs/usr/bin/python3.11").is_file() and (root / "site-packages/tvm").is_dir())


def _arm64_packages() -> list[str]:
    out = subprocess.run(
        ["apt-cache", "depends", "--recurse", "--no-recommends", "--no-suggests", "--no-conflicts",
         "--no-breaks", "--no-replaces", "--no-enhances", *[f"{p}:arm64" for p in DEBIAN_ROOTS]],
        capture_output=True, text=True, check=True).stdout
    names = set()
    for line in out.splitlines():
        # Top-level lines are package names; indented ones are relations; <virtual> packages have no .deb.
        if line and not line.startswith(" ") and not line.startswith("<") and line.endswith(":arm64"):
            name = line[: -len(":arm64")]
            if name not in DEBIAN_SKIP:
                names.add(name)
    return sorted(names)


def _check_call(cmd: list[str], what: str, **kw) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kw)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ToolchainError(f"{what} failed (exit {proc.returncode}):\n{tail}",
                             hint="check network access to the Debian mirror and PyPI, then re-run setup")


def setup(force: bool = False, quiet: bool = False) -> Emulator:
    """Build (first time) or reuse (later) the aarch64 rootfs and TVM site-packages. Returns the Emulator."""
    from c2f_edge.core.progress import Stages

    root = emulator_dir()
    if not force and _is_ready(root):
        if not shutil.which(QEMU):
            check_prerequisites()
        return Emulator(root)
    check_prerequisites()
    with open(os.devnull, "w") as devnull, atomic_dir(root) as tmp:
        stages = Stages(5, stream=devnull if quiet else None)
        debs, rootfs, site = tmp / "debs", tmp / "rootfs", tmp / "site-packages"
        for d in (debs, rootfs, site):
            d.mkdir()
        with stages.step("resolving arm64 Debian packages"):
            pkgs = _arm64_packages()
        with stages.step(f"downloading {len(pkgs)} arm64 .debs"):
            files = apt.download([f"{p}:arm64" for p in pkgs], debs)
        with stages.step("unpacking rootfs"):
            apt.unpack(files, rootfs)
            shutil.rmtree(debs)
            # Debian ships no .pyc; byte-compile on the host (same 3.11 format) so the guest need not.
            subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0",
                            str(rootfs / "usr/lib/python3.11")], capture_output=True, check=False)
        with stages.step("installing aarch64 wheels (apache-tvm, numpy)"):
            cmd = [sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check",
                   "--target", str(site), "--only-binary=:all:", "--python-version", "3.11",
                   "--implementation", "cp", "--abi", "cp311"]
            for plat in WHEEL_PLATFORMS:
                cmd += ["--platform", plat]
            _check_call(cmd + list(WHEELS), "pip install of the aarch64 wheels")
        with stages.step("checking `import tvm` under emulation"):
            emu = Emulator(tmp)
            probe = emu.run(["-c", "import tvm, numpy, platform; print(platform.machine(), tvm.__version__)"])
            if probe.returncode != 0 or "aarch64" not in probe.stdout:
                tail = "\n".join((probe.stdout + probe.stderr).strip().splitlines()[-10:])
                raise ToolchainError(f"the emulated Python cannot import tvm:\n{tail}",
                                     hint="re-run setup with force=True; check qemu-user-static works")
        versions = {"qemu": subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=False).stdout
                    .splitlines()[0], "guest": probe.stdout.strip()}
        write_json(tmp / "manifest.json",
                   new_manifest("emulator", recipe=RECIPE, debian_packages=pkgs, emulator=versions))
    return Emulator(root)


def start_board(tracker=None, key: str = DEFAULT_KEY, host: str = "127.0.0.1", port: int | None = None,
                timeout: float = READY_TIMEOUT, name: str | None = None, pid_file=None,
                session_fork: bool = True) -> Service:
    """Start the emulated aarch64 RPC server. `tracker` is a Service or "HOST:PORT" (optional).

    Returns once it listens (and is registered with the tracker). Stop it with `.stop()`.
    """
    tracker_addr = tracker.address if isinstance(tracker, Service) else tracker
    if tracker_addr:
        tracker_summary(tracker_addr)  # fail fast (RemoteError) rather than after the slow start-up
    emu = setup()  # a no-op (~0.1 s) once the cache is built
    port = port or free_port(host)
    name = name or f"board-{port}"
    rdir = run_dir()
    log_path, ready = rdir / f"{name}.log", rdir / f"{name}.ready"
    ready.unlink(missing_ok=True)
    args = [str(SERVER_SCRIPT), "--host", host, "--port", str(port), "--key", key,
            "--ready-file", str(ready)]
    if tracker_addr:
        args += ["--tracker", tracker_addr]
    if not session_fork:
        args.append("--no-fork")
    with open(log_path, "w") as log:
        proc = subprocess.Popen(emu.command(["-u", *args]), env=emu.env(), stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                                cwd=str(rdir))
    svc = Service(kind="board", host=host, port=port, key=key, pid=proc.pid, log_path=str(log_path),
                  tracker=tracker_addr, emulated=True, pid_file=str(pid_file) if pid_file else None)
    svc._proc = proc
    wait_ready(svc, lambda: ready.is_file(), timeout)
    ready.unlink(missing_ok=True)
    svc.write_pid_file()
    return svc


@contextlib.contextmanager
def board(tracker=None, key: str = DEFAULT_KEY, **kw):
    """`with emulator.board(tracker=t, key="arm64-emu") as b:` start, yield the handle, stop."""
    svc = start_board(tracker=tracker, key=key, **kw)
    try:
        yield svc
    finally:
        svc.stop()


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m c2f_edge.board.emulator",
                                description="Build or check the cached aarch64 emulator userland.")
    p.add_argument("action", choices=["setup", "info"])
    p.add_argument("--force", action="store_true", help="rebuild even if the cache is valid")
    a = p.parse_args(argv)
    if a.action == "setup":
        t0 = time.perf_counter()
        emu = setup(force=a.force)
        print(f"emulator ready at {emu.root} in {time.perf_counter() - t0:.1f}s")
    else:
        root = emulator_dir()
        print(json.dumps(read_manifest(root), indent=2) if _is_ready(root) else f"no emulator at {root}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except C2FError as e:
        sys.exit(report(e))
