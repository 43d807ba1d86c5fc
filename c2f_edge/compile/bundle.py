"""A TVM bundle on disk (model.so + manifest.json + README.txt) and loading it to run: here, or on a
board over RPC. `runner(x)` takes float32 NCHW numpy and returns logits."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from c2f_edge.core.artifacts import check_files, read_manifest
from c2f_edge.core.errors import ArtifactError, ShapeError, first_line

BUNDLE_KIND = "tvm-bundle"
LIBRARY = "model.so"
# platform.machine() -> the name backend.crosslink.elf_arch gives the same CPU
_ELF_NAMES = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64",
              "armv7l": "arm32", "armv8l": "arm32"}


class BundleRunner:
    """`runner(x)`: float32 NCHW numpy -> logits numpy, one VM call per image."""

    def __init__(self, vm, device, manifest: dict):
        self.vm, self.device, self.manifest = vm, device, manifest
        self.input_shape = tuple(manifest["input"]["shape"])

    def __call__(self, x: np.ndarray) -> np.ndarray:
        import tvm

        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim == 3:
            x = x[None]
        if tuple(x.shape[1:]) != self.input_shape[1:]:
            raise ShapeError(f"input shape {tuple(x.shape)} does not fit the bundle's {self.input_shape}",
                             hint="resize/crop the images to the size the model was exported with")
        b = self.input_shape[0]
        outs = [self.vm["main"](tvm.runtime.tensor(x[i:i + b], self.device)).numpy() for i in range(0, len(x), b)]
        return np.concatenate(outs)

    def time(self, number: int = 1, repeat: int = 3) -> list[float]:
        """Seconds per inference of `main` on a zero input, by TVM's timer (runs where the device is)."""
        import tvm

        x = tvm.runtime.tensor(np.zeros(self.input_shape, np.float32), self.device)
        res = self.vm.time_evaluator("main", self.device, number=number, repeat=repeat)(x)
        return [float(t) for t in res.results]


def _vm_class():
    from tvm.runtime.vm import VirtualMachine

    return VirtualMachine


def read_bundle_manifest(bundle_dir) -> dict:
    m = read_manifest(bundle_dir)
    if m.get("kind") != BUNDLE_KIND:
        raise ArtifactError(f"{bundle_dir} is a {m.get('kind')!r} artifact, not a TVM bundle",
                            hint="point at a directory written by `c2f-edge compile`")
    if not (Path(bundle_dir) / LIBRARY).is_file():
        raise ArtifactError(f"{bundle_dir} has no {LIBRARY}", hint="re-run `c2f-edge compile`")
    check_files(bundle_dir, m)
    return m


def this_machine() -> str:
    """This CPU's name in ELF terms ('x86_64', 'aarch64', 'arm32')."""
    return _ELF_NAMES.get(platform.machine().lower(), platform.machine().lower())


def runs_here(bundle_dir, manifest: dict | None = None) -> bool:
    """A bundle runs here if it is a CPU bundle linked for this machine's architecture (read from the
    ELF header of model.so itself, not from the manifest)."""
    from c2f_edge.backend.crosslink import elf_arch

    m = manifest or read_bundle_manifest(bundle_dir)
    cpu = (m.get("runtime") or {}).get("device", "cpu") == "cpu"
    return cpu and elf_arch(Path(bundle_dir) / LIBRARY) == this_machine()


def check_runs_here(bundle_dir, manifest: dict) -> None:
    """ArtifactError naming the bundle's CPU when it cannot run on this machine (before dlopen fails)."""
    from c2f_edge.backend.crosslink import elf_arch

    if runs_here(bundle_dir, manifest):
        return
    elf = elf_arch(Path(bundle_dir) / LIBRARY)
    if elf == "not-elf":
        raise ArtifactError(f"{Path(bundle_dir) / LIBRARY} is not an ELF shared object: damaged or partly copied",
                            hint="re-copy the bundle, or rebuild it with `c2f-edge compile`")
    device = (manifest.get("runtime") or {}).get("device", "cpu")
    what = f"an {device} bundle for {elf}" if device != "cpu" else f"a bundle for {elf}"
    if elf == "aarch64":
        emulated = ("or on the emulated aarch64 board (parity --rpc emulated, compile --verify emulated, profile "
                    "--rpc-tracker after `python scripts/rpc_services.py board start`)")
    elif elf == "arm32":
        emulated = f"or check its results under qemu (parity --backend tvm-qemu={bundle_dir})"
    else:
        emulated = "there is no emulator for it here"
    raise ArtifactError(f"{bundle_dir} is {what} ({manifest['target']['name']}), which cannot run on this "
                        f"{this_machine()} machine",
                        hint=f"run it on its board over RPC (--rpc / --rpc-tracker), {emulated}; or compile "
                             "--target host to run it here")


def load_bundle(bundle_dir, device=None) -> BundleRunner:
    """Load a bundle that runs on this machine (a host bundle). device: a tvm Device, default from manifest."""
    import tvm

    bundle_dir = Path(bundle_dir)
    m = read_bundle_manifest(bundle_dir)
    check_runs_here(bundle_dir, m)
    if device is None:
        device = tvm.device(m["runtime"]["device"], 0)
    try:
        lib = tvm.runtime.load_module(str(bundle_dir / LIBRARY))
    except Exception as e:
        raise ArtifactError(f"cannot load {bundle_dir / LIBRARY}: {first_line(e)}",
                            hint="the file may be damaged; re-run `c2f-edge compile`") from e
    return BundleRunner(_vm_class()(lib, device), device, m)


def load_remote_bundle(bundle_dir, session, device=None) -> BundleRunner:
    """Upload model.so over a TVM RPC session (tvm.rpc.connect(...) or a tracker request) and load it there."""
    bundle_dir = Path(bundle_dir)
    m = read_bundle_manifest(bundle_dir)
    remote_name = f"c2f_{m['files'][LIBRARY]['sha256'][:12]}.so"
    session.upload(str(bundle_dir / LIBRARY), target=remote_name)
    lib = session.load_module(remote_name)
    if device is None:
        device = session.device(m["runtime"]["device"], 0)
    return BundleRunner(_vm_class()(lib, device), device, m)
