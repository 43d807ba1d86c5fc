"""Where and how candidates are measured: the target and its linker, this CPU or a board over RPC,
the threads, and what the log records about the machine."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

from c2f_edge.core.errors import UsageError


def resolve_target(name: str, cross_compiler: str | None = None):
    """Target name -> (target JSON exactly as compile builds it, fcompile for candidates or None).

    Uses the target registry (backend.targets). Cross targets get the cross-linker from
    c2f_edge.backend.crosslink, so candidates load on a board that has no compiler.
    """
    from c2f_edge.backend import crosslink, targets

    spec = targets.get(name)
    spec.check()
    fcompile = None if spec.runs_here and not cross_compiler else crosslink.linker_for(spec, cross_compiler)
    return spec, spec.to_json(), fcompile


def host_machine() -> dict:
    """Where a local tuning run measured: CPU model, cores, OS."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import tvm

    return {"kind": "local", "cpu": cpu, "cores": os.cpu_count(), "arch": platform.machine(),
            "llvm_mcpu": tvm.target.codegen.llvm_get_system_cpu(), "os": f"{platform.system()} {platform.release()}",
            "node": platform.node()}



def emulated_machine(target_name: str, target_json: dict, cpu: str | None) -> dict:
    """Where an emulated tuning run scores: the core, and what its costs are (recorded in meta.json)."""
    import shutil

    import tvm

    from c2f_edge.board import cycle_model, insn_count
    from c2f_edge.core.errors import ToolchainError
    from c2f_edge.tune.emulated import cost_note

    t = tvm.target.Target(target_json)  # a tag (rpi4's) resolves to its mtriple and mcpu
    triple, mcpu = str(t.attrs.get("mtriple") or ""), t.attrs.get("mcpu")
    if not triple.startswith("aarch64") or t.kind.name != "llvm":
        raise UsageError(f"--emulated tunes aarch64 CPU targets; {target_name!r} is {triple or t.kind.name}",
                         hint="e.g. --target rpi5 or --target rpi4")
    core = insn_count.emulated_core(target_name, str(mcpu) if mcpu else None, cpu)
    if not shutil.which(insn_count.QEMU):
        raise ToolchainError(f"{insn_count.QEMU} not found: the dynamic qemu-user runs the candidates",
                             hint="run `make setup-system`")
    model = cycle_model.CORES.get(core)
    return {"kind": "emulated", "cpu": core, "emulator": "qemu-aarch64 (Debian qemu-user) with c2f-edge's "
            "instruction-count plugin", "cost": cost_note(core),
            "cycle_model": None if model is None else {"core": model.name, "clock_ghz": model.clock_ghz,
                                                       "board": model.board},
            "threads": 1, "node": platform.node()}


def parse_hostport(s: str, flag: str) -> tuple[str, int]:
    host, _, port = (s or "").rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(f"{flag} must be HOST:PORT, got {s!r}", hint=f"e.g. {flag} 127.0.0.1:9190")
    return host, int(port)


class DirectSession:
    """Picklable f_create_session for RPCRunner: connect to one server without a tracker."""

    def __init__(self, host: str, port: int, timeout: int):
        self.host, self.port, self.timeout = host, port, timeout

    def __call__(self, _rpc_config):
        from tvm import rpc

        return rpc.connect(self.host, self.port, session_timeout=self.timeout)


def remote_machine(cfg, half_on_opencl: bool = False) -> dict:
    """Where an RPC tuning run measures; opening a session first also fails fast (RemoteError) when the
    tracker, key or server is not there, instead of every candidate timing out. half_on_opencl: the
    candidates are OpenCL half kernels; a board that can say its device lacks cl_khr_fp16 (one running
    c2f-edge's OpenCL runtime) is refused before any is built."""
    from c2f_edge.board import rpc

    if cfg.rpc:
        sess = rpc.connect(cfg.rpc, session_timeout=cfg.session_timeout_s)
        info = {"kind": "rpc", "server": cfg.rpc}
    else:
        from c2f_edge.tune.farm import count_boards

        sess = rpc.connect(tracker=cfg.rpc_tracker, key=cfg.rpc_key, session_timeout=cfg.session_timeout_s)
        # How many measure at once (the runner's workers): the boards registered, at most --boards.
        info = {"kind": "rpc", "tracker": cfg.rpc_tracker, "key": cfg.rpc_key,
                "boards": max(1, count_boards(cfg.rpc_tracker, cfg.rpc_key, cfg.boards))}
    dev = sess.cpu(0)
    info["remote_cpu_present"] = bool(dev.exist)
    if half_on_opencl:
        _check_remote_half(sess)
    del sess
    return info


def _check_remote_half(sess) -> None:
    from c2f_edge.core.errors import UnsupportedError

    try:
        extensions = str(sess.get_function("c2f_edge.opencl.extensions")()).split()
    except Exception:  # noqa: BLE001 - TVM's own OpenCL runtime cannot tell: the candidates will
        return
    if "cl_khr_fp16" not in extensions:
        raise UnsupportedError("--precision fp16: the board's OpenCL device does not offer cl_khr_fp16 (half "
                               "precision), so every fp16 candidate would fail there",
                               hint="tune fp16 on a board whose GPU has it (Mali, Adreno), or tune --precision fp32")


def make_runner(cfg, timeout_s: float, boards: int = 1, journal: str | None = None):
    """This CPU, one RPC server (--rpc), or every board under a tracker key at once (up to `boards`; each
    measuring session is appended to `journal`, see farm.TrackerSession)."""
    from tvm.s_tir import meta_schedule as ms

    evaluator = ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=100, enable_cpu_cache_flush=False)
    if cfg.rpc:
        host, port = parse_hostport(cfg.rpc, "--rpc")
        rc = ms.runner.RPCConfig(tracker_host=host, tracker_port=port, tracker_key="direct",
                                 session_timeout_sec=cfg.session_timeout_s)
        return ms.runner.RPCRunner(rc, evaluator, f_create_session=DirectSession(host, port, cfg.session_timeout_s))
    if cfg.rpc_tracker:
        from c2f_edge.tune.farm import FarmRunner

        parse_hostport(cfg.rpc_tracker, "--rpc-tracker")
        return FarmRunner(cfg.rpc_tracker, cfg.rpc_key, boards, evaluator, cfg.session_timeout_s, journal)
    return ms.runner.LocalRunner(timeout_sec=timeout_s, evaluator_config=evaluator)


def measure_threads(target_json: dict) -> int | None:
    """Threads the kernels are measured with: the target's core count (what a deployment uses)."""
    cores = target_json.get("num-cores") or (target_json.get("host") or {}).get("num-cores")
    return int(cores) if cores else None


def import_intrinsics_without_cuda(target_json: dict) -> None:
    """Import MetaSchedule's tensor intrinsics without the CUDA ones, for a target that is not CUDA.

    TuneContext imports `tvm.s_tir.tensor_intrin`, whose CUDA part alone parses hundreds of TVMScript
    functions (about 24 s here, minutes on busy cores) that CPU and OpenCL schedules never use (its tensor
    core rules are for CUDA targets). A placeholder stands in for `tensor_intrin.cuda` during that import
    and is removed right after, so a later CUDA build in the same process still imports the real module.
    """
    import types

    if target_json.get("kind") == "cuda" or "tvm.s_tir.tensor_intrin" in sys.modules:
        return
    name = "tvm.s_tir.tensor_intrin.cuda"
    sys.modules[name] = types.ModuleType(name)
    try:
        import tvm.s_tir.tensor_intrin as ti
    finally:
        del sys.modules[name]
    if isinstance(getattr(ti, "cuda", None), types.ModuleType) and not hasattr(ti.cuda, "__file__"):
        delattr(ti, "cuda")
