"""What the board says about itself over TVM RPC, recorded with every timing.

TVM's runtime exposes the thread pool (`runtime.NumThreads`, `runtime.config_threadpool`) and device
attributes, but no CPU model and no version global. Where a server lets us, we read a few small
sysfs/device-tree files through the RPC file download (`tvm.rpc.server.download`, which the stock
server and the c2f-edge board resolve as absolute paths); everything else is recorded as null with a note.
"""

from __future__ import annotations

from c2f_edge.core.errors import first_line

# runtime.config_threadpool affinity modes (threading_backend.h): 1 = big cores, -1 = little cores.
AFFINITY = {"big": 1, "little": -1}

# ARM MIDR part numbers (bits 15:4, implementer 0x41) of common board cores.
ARM_PARTS = {
    0xD03: "Cortex-A53", 0xD04: "Cortex-A35", 0xD05: "Cortex-A55", 0xD07: "Cortex-A57", 0xD08: "Cortex-A72",
    0xD09: "Cortex-A73", 0xD0A: "Cortex-A75", 0xD0B: "Cortex-A76", 0xD0D: "Cortex-A77", 0xD41: "Cortex-A78",
    0xD44: "Cortex-X1", 0xD46: "Cortex-A510", 0xD47: "Cortex-A710", 0xD48: "Cortex-X2", 0xD4D: "Cortex-A715",
    0xD4E: "Cortex-X3", 0xD80: "Cortex-A520", 0xD81: "Cortex-A720", 0xD82: "Cortex-X4", 0xC07: "Cortex-A7",
    0xC09: "Cortex-A9", 0xC0F: "Cortex-A15",
}


def _read_remote_text(session, path: str) -> str | None:
    try:
        raw = bytes(session.download(path))
    except Exception:  # noqa: BLE001 - missing file, or a server that does not allow it
        return None
    text = raw.replace(b"\0", b"").decode(errors="replace").strip()
    return text or None


def _count_cpus(ranges: str) -> int | None:
    """'0-3,6' -> 5."""
    try:
        n = 0
        for part in ranges.split(","):
            lo, _, hi = part.partition("-")
            n += int(hi or lo) - int(lo) + 1
        return n
    except ValueError:
        return None


def _arm_cores(session, n: int) -> str | None:
    """'4x Cortex-A76 + 4x Cortex-A55' from each core's MIDR_EL1 (arm64 Linux)."""
    names = []
    for i in range(min(n, 16)):
        midr = _read_remote_text(session, f"/sys/devices/system/cpu/cpu{i}/regs/identification/midr_el1")
        if midr is None:
            return None
        try:
            v = int(midr, 16)
        except ValueError:
            return None
        part = (v >> 4) & 0xFFF
        names.append(ARM_PARTS.get(part, f"ARM part 0x{part:03x}") if (v >> 24) == 0x41 else f"MIDR {midr}")
    counts: dict[str, int] = {}
    for name in names:
        counts[name] = counts.get(name, 0) + 1
    return " + ".join(f"{c}x {name}" for name, c in counts.items())


def remote_cpu(session) -> dict:
    """CPU model and core count as far as the board reveals them (None when it does not)."""
    online = _read_remote_text(session, "/sys/devices/system/cpu/online")
    cores = _count_cpus(online) if online else None
    board = _read_remote_text(session, "/sys/firmware/devicetree/base/model")
    model = _arm_cores(session, cores) if cores else None
    note = []
    if cores is None:
        note.append("core count: not exposed (the RPC server does not serve /sys/devices/system/cpu/online)")
    if model is None:
        note.append("CPU model: not exposed by TVM's RPC runtime (read only from arm64 MIDR registers)")
    return {"model": model, "board": board, "cores": cores,
            "source": "RPC file download of /sys (and device tree) on the board",
            "note": "; ".join(note) or None}


def configure_threads(session, threads: int | None, affinity: str = "big") -> dict:
    """Set the board's thread pool (before loading the model) and read back what it uses."""
    out = {"requested": threads, "affinity": affinity if threads else None, "used": None, "note": None}
    if threads:
        session.get_function("runtime.config_threadpool")(AFFINITY[affinity], int(threads))
    try:
        out["used"] = int(session.get_function("runtime.NumThreads")())
    except Exception as e:  # noqa: BLE001 - an old or minimal runtime
        out["note"] = f"runtime.NumThreads unavailable: {first_line(e, 120)}"
    if not threads:
        out["note"] = ("TVM default: TVM_NUM_THREADS on the board, else its hardware threads "
                       "(halved on x86 to skip hyper-threads)")
    elif out["used"] is not None and out["used"] < threads:
        out["note"] = (f"asked for {threads} threads, the board's TVM thread pool has {out['used']}: its size is "
                       "fixed when the server starts (TVM_NUM_THREADS, else hardware threads, halved on x86); "
                       f"restart the RPC server with TVM_NUM_THREADS={threads} to use more")
    return out


def device_info(dev) -> dict:
    """Attributes TVM exposes for the device the model runs on (GPU name, memory, ...)."""
    info = {}
    for attr in ("device_name", "total_global_memory", "compute_version", "multi_processor_count",
                 "max_clock_rate"):
        v = _attr(dev, attr)
        if v is not None:
            info[attr] = v
    return info


def _attr(dev, name: str):
    try:
        return getattr(dev, name)
    except Exception:  # noqa: BLE001 - not all attributes exist on all device kinds
        return None
