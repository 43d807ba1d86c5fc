"""Run an ARM bundle here: the Relax VM on this machine, each kernel under qemu user mode.

For armv7 there is no TVM runtime to put on an emulated board (PyPI has no armv7 wheel of apache-tvm,
and TVM's source cannot be fetched at run time). A bundle's kernels need none of it, though: they are
plain ARM functions in model.so. So the VM bytecode stored in model.so runs on this machine with a
placeholder per kernel, and an instrument hook sends every kernel call, with its arguments, to
`kernel_runner.c` -- built for the bundle's CPU with zig and run under qemu-arm (or qemu-aarch64)
against a Debian libc -- which runs the bundle's own compiled kernel and sends the tensors back.

Results are the bundle's; timings are meaningless (emulation, one thread). The placeholder kernels
are process-global while it runs, and qemu is a child of it, so `run_bundle` runs it in a subprocess
(`python -m c2f_edge.board.kernel_runner`).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from c2f_edge.core import apt, native
from c2f_edge.core.cache import cache_dir
from c2f_edge.core.errors import ArtifactError, RemoteError, ToolchainError

SOURCE = Path(__file__).with_name("kernel_runner.c")
MAGIC = 0x4B463243  # "C2FK"
# crosslink.elf_arch of a bundle -> (qemu, Debian architecture, zig target)
ARCHES = {"arm32": ("qemu-arm-static", "armhf", "arm-linux-gnueabihf"),
          "aarch64": ("qemu-aarch64-static", "arm64", "aarch64-linux-gnu")}
LIBC_PACKAGES = ("libc6", "libgcc-s1", "gcc-12-base")
CACHE = "kernel-runner"  # under core.cache.cache_root()
_DTYPE_CODES = {"i": 0, "u": 1, "f": 2}


def emulation_for(so_path: Path) -> tuple[str, str, str]:
    """(qemu, Debian architecture, zig target) for a bundle's model.so."""
    from c2f_edge.backend.crosslink import elf_arch

    arch = elf_arch(so_path)
    if arch == "not-elf":
        raise ArtifactError(f"{so_path} is not an ELF shared object", hint="re-run `c2f-edge compile`")
    if arch not in ARCHES:
        raise ArtifactError(f"{so_path} is not an ARM bundle (ELF machine {arch})",
                            hint="this runner is for armv7/arm64 bundles; run host bundles directly")
    return ARCHES[arch]


def rootfs(deb_arch: str) -> Path:
    """A minimal Debian libc for the bundle's CPU (what model.so and the runner link against), cached."""
    root = cache_dir(CACHE) / f"rootfs-{deb_arch}"
    if (root / "lib").is_dir():
        return root
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise ToolchainError(f"{tool} not found: the {deb_arch} libc comes from Debian packages",
                                 hint="run on Debian/Ubuntu, or `make setup-system`")
    with tempfile.TemporaryDirectory(prefix="c2f-rootfs-") as tmp:
        debs, out = Path(tmp, "debs"), Path(tmp, "rootfs")
        debs.mkdir()
        apt.unpack(apt.download([f"{p}:{deb_arch}" for p in LIBC_PACKAGES], debs), out)
        root.parent.mkdir(parents=True, exist_ok=True)
        if not root.exists():  # another process may have won the race: its copy is as good
            os.replace(out, root)
    return root


def runner_binary(zig_target: str) -> Path:
    """kernel_runner.c built for the bundle's CPU (zig, against tvm-ffi's C headers), cached."""
    import tvm_ffi

    from c2f_edge.backend.crosslink import zig_env

    ffi = Path(tvm_ffi.__file__).parent
    return native.build(f"kernel-runner-{zig_target}", [SOURCE],
                        [sys.executable, "-m", "ziglang", "cc", "-target", zig_target],
                        ["-O2", "-rdynamic", "-I", str(ffi / "include"),
                         "-I", str(ffi / "3rdparty" / "dlpack" / "include"), "-ldl"],
                        env=zig_env(), hint="pip install ziglang (c2f-edge's cross-linker)")


class KernelRunner:
    """One qemu process holding the bundle's model.so; `call` runs one kernel on numpy arguments."""

    def __init__(self, so_path: str | Path):
        qemu, deb_arch, zig_target = emulation_for(Path(so_path))
        if shutil.which(qemu) is None:
            raise ToolchainError(f"{qemu} not found", hint="apt-get install qemu-user-static (make setup-system)")
        cmd = [qemu, "-L", str(rootfs(deb_arch)), str(runner_binary(zig_target)), str(Path(so_path).resolve())]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def call(self, name: str, args: list) -> list[np.ndarray]:
        """Run kernel `name`; args are numpy arrays or Python scalars. Returns the arrays after the call."""
        parts = [struct.pack("<II", MAGIC, len(name)), name.encode(), struct.pack("<I", len(args))]
        arrays = []
        for a in args:
            if isinstance(a, np.ndarray):
                a = np.ascontiguousarray(a)
                arrays.append(a)
                parts += [struct.pack("<IBBHI", 0, _DTYPE_CODES[a.dtype.kind], a.dtype.itemsize * 8, 1, a.ndim),
                          struct.pack(f"<{a.ndim}q", *a.shape), a.tobytes()]
            elif isinstance(a, float):
                parts.append(struct.pack("<Id", 2, a))
            else:
                parts.append(struct.pack("<Iq", 1, int(a)))
        try:
            self.proc.stdin.write(b"".join(parts))
            self.proc.stdin.flush()
            status, n = struct.unpack("<iI", self._read(8))
            message = self._read(n).decode(errors="replace")
        except (BrokenPipeError, EOFError) as e:
            raise RemoteError(f"the emulated kernel runner died in {name}: {self._stderr()}",
                              hint="check qemu-user-static and the bundle's target") from e
        if status:
            raise RemoteError(f"kernel {name} failed under emulation: {message}", hint="re-run `c2f-edge compile`")
        return [np.frombuffer(self._read(a.nbytes), a.dtype).reshape(a.shape) for a in arrays]

    def _read(self, n: int) -> bytes:
        data = self.proc.stdout.read(n)
        if len(data) != n:
            raise EOFError
        return data

    def _stderr(self) -> str:
        self.proc.kill()
        return (self.proc.stderr.read() or b"").decode(errors="replace").strip()[-300:] or "no message"

    def close(self):
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(struct.pack("<II", MAGIC, 0))
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def run_in_process(so_path: str | Path, x: np.ndarray, func: str = "main", capture: bool = False):
    """The VM of model.so here, its kernels under qemu. Returns (output, [(kernel, its output)] if capture)."""
    from c2f_edge.backend.bundle_file import vm_executable_bytes
    from c2f_edge.backend.kernel_trace import run_kernel_by_kernel

    with KernelRunner(so_path) as runner:
        def call(name, args):
            tensors = [a for a in args if hasattr(a, "numpy")]
            plain = [a.numpy() if hasattr(a, "numpy") else a for a in args]
            for t, out in zip(tensors, runner.call(name, plain)):
                t.copyfrom(out)

        return run_kernel_by_kernel(vm_executable_bytes(so_path), x, call, func, capture)


def run_bundle(bundle_dir: str | Path, x: np.ndarray, timeout: float = 1800, capture: bool = False):
    """Output of the bundle's `main` on x, its kernels run on an emulated CPU of the bundle's kind.
    capture: also return every kernel's output, in call order ([(kernel, array)])."""
    so = Path(bundle_dir) / "model.so"
    if not so.is_file():
        raise ArtifactError(f"no model.so in {bundle_dir}", hint="run `c2f-edge compile` first")
    emulation_for(so)  # a bundle for this machine, or a broken file, fails here in one line
    with tempfile.TemporaryDirectory(prefix="c2f-qemu-") as d:
        np.save(Path(d) / "x.npy", x)
        cmd = [sys.executable, "-m", "c2f_edge.board.kernel_runner", str(so), str(Path(d) / "x.npy"),
               str(Path(d) / "y.npy")] + ([str(Path(d) / "kernels.npz")] if capture else [])
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if proc.returncode:
            lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
            raise RemoteError(f"running {so} under emulation failed: {lines[-1] if lines else proc.returncode}",
                              hint="run `python -m c2f_edge.board.kernel_runner MODEL.SO X.NPY Y.NPY` to see "
                                   "the whole error")
        y = np.load(Path(d) / "y.npy")
        if not capture:
            return y
        with np.load(Path(d) / "kernels.npz") as z:
            names = [str(n) for n in z["names"]]
            return y, [(n, z[f"out{i}"]) for i, n in enumerate(names)]


def setup() -> None:
    """Build the armv7 runner and unpack its libc now (make setup-system), not inside a test or a check."""
    _, deb_arch, zig_target = ARCHES["arm32"]
    print(f"kernel runner for {zig_target}: {runner_binary(zig_target)} (libc in {rootfs(deb_arch)})")


def main(argv: list[str]) -> int:
    if argv == ["setup"]:
        setup()
        return 0
    if len(argv) not in (3, 4):
        print("usage: python -m c2f_edge.board.kernel_runner MODEL.SO INPUT.npy OUTPUT.npy [KERNELS.npz] | setup",
              file=sys.stderr)
        return 2
    y, outputs = run_in_process(argv[0], np.load(argv[1]), capture=len(argv) == 4)
    np.save(argv[2], y)
    if len(argv) == 4:
        np.savez(argv[3], names=np.array([n for n, _ in outputs]),
                 **{f"out{i}": a for i, (_, a) in enumerate(outputs)})
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
