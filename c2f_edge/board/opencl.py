"""The local OpenCL device: our OpenCL runtime for the TVM wheel, over whatever OpenCL driver is installed.

The PyPI TVM wheel generates OpenCL kernels (the `mali` and `adreno` targets) but has no runtime to run
them. `opencl_runtime.cc`, beside this file, is one: TVM's device API and a loader for its serialized
"opencl" modules, built here with g++ against the installed wheel's headers and the OpenCL ICD loader,
and cached under the cache root (core.native). On this project's machines the driver is PoCL, a CPU
OpenCL device (apt: APT_PACKAGES, installed by `make setup-system`); on a machine with a GPU driver the
same library runs the kernels there.

A GPU bundle's host code is built for the board's CPU; `twin_target` gives the same GPU target with this
machine as the host (that of the test target `opencl-x86`). Its OpenCL kernels are the ones that ship, and
they run here, or on the local OpenCL board (board.opencl_server).

    python -m c2f_edge.board.opencl setup    build the runtime (cached) and name the device it finds
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path

from c2f_edge.core import native
from c2f_edge.core.errors import C2FError, ToolchainError, UnsupportedError, report

SOURCE = Path(__file__).with_name("opencl_runtime.cc")
# PoCL behind the ICD loader, the headers and libOpenCL.so to build against, clinfo to look, g++ to build.
APT_PACKAGES = ("pocl-opencl-icd", "ocl-icd-libopencl1", "ocl-icd-opencl-dev", "opencl-headers", "clinfo", "g++")
SETUP_HINT = "run `make setup-system` (as root it installs PoCL, then builds the runtime)"
# The test target whose host a twin takes: mali's kernels with this machine's CPU as host (targets/).
TEST_TARGET = "opencl-x86"

_loaded: Path | None = None


def _wheel_dirs() -> tuple[str, Path, Path]:
    """TVM's version, and the include and library directories of the installed tvm and tvm_ffi wheels."""
    import tvm
    import tvm_ffi

    return tvm.__version__, Path(tvm.__file__).parent, Path(tvm_ffi.__file__).parent


def runtime_library() -> Path:
    """Our runtime, built for the installed TVM wheel (cached: rebuilt when the source or the wheel changes)."""
    version, tvm_dir, ffi_dir = _wheel_dirs()
    if not Path("/usr/include/CL/cl.h").is_file():
        raise ToolchainError("the OpenCL headers are not installed (CL/cl.h)", hint=SETUP_HINT)
    libs = [tvm_dir / "lib", ffi_dir / "lib"]
    args = ["-std=c++17", "-O2", "-shared", "-fPIC", "-Wall", f'-DC2F_TVM_VERSION="{version}"',
            "-I", str(tvm_dir / "include"), "-I", str(ffi_dir / "include"),
            *[f"-L{d}" for d in libs], *[f"-Wl,-rpath,{d}" for d in libs],
            "-ltvm_runtime", "-ltvm_ffi", "-lOpenCL"]
    return native.build("libtvm_runtime_opencl.so", [SOURCE], ["g++"], args, hint=SETUP_HINT)


def load_library() -> Path:
    """Build (if needed) and load the runtime into this process without touching the driver: OpenCL
    drivers (PoCL's threads) do not survive a fork, so a server that forks per session loads only this."""
    global _loaded
    if _loaded is None:
        import tvm

        lib = runtime_library()
        if not tvm.runtime.enabled("opencl"):  # another OpenCL runtime (a TVM built from source) wins
            ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)
        _loaded = lib
    return _loaded


def load() -> Path:
    """Build (if needed) and load the runtime into this process; then `tvm.opencl(0)` works and bundles with
    OpenCL kernels load. Raises UnsupportedError, one line, when there is no OpenCL device."""
    load_library()
    if problem := device_problem():
        raise UnsupportedError(f"no OpenCL device to run on: {problem}", hint=SETUP_HINT)
    return _loaded


def device_problem() -> str | None:
    """Why the loaded runtime has no device (no platform, no device), or None."""
    import tvm

    probe = tvm.get_global_func("c2f_edge.opencl.problem", allow_missing=True)
    if probe is not None:
        return str(probe()) or None
    return None if tvm.opencl(0).exist else "the OpenCL runtime reports no device 0"


def launches() -> dict[str, int]:
    """The largest work-group (work items) each kernel was launched with in this process so far."""
    import tvm

    load()
    return {str(k): int(v) for k, v in tvm.get_global_func("c2f_edge.opencl.launches")().items()}


def extensions() -> set[str]:
    """The OpenCL extensions of device 0 (e.g. cl_khr_fp16, which fp16 bundles need)."""
    import tvm

    load()
    return set(str(tvm.get_global_func("c2f_edge.opencl.extensions")()).split())


def fp16_problem() -> str | None:
    """Why device 0 cannot run half-precision kernels, or None."""
    if "cl_khr_fp16" in extensions():
        return None
    return f"{device_name()} does not offer cl_khr_fp16 (OpenCL half precision)"


def device_name() -> str:
    import tvm

    load()
    return str(tvm.opencl(0).device_name)


def twin_target(target: dict) -> dict:
    """A GPU target JSON with this machine as its host (the test target's): the same device code, host code
    that runs here."""
    from c2f_edge.backend import targets

    host = targets.get(TEST_TARGET).to_json()["host"]
    return {**{k: v for k, v in target.items() if k != "host"}, "host": dict(host)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m c2f_edge.board.opencl",
                                description="Build our OpenCL runtime for the installed TVM wheel (cached) and "
                                            "name the OpenCL device it runs on.")
    p.add_argument("action", choices=["setup"])
    p.parse_args(argv)
    try:
        lib = load()
        print(f"OpenCL runtime: {lib}; device 0: {device_name()}")
    except C2FError as e:
        return report(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
