"""Stage 2: simplified ONNX -> a deployable TVM bundle for one target.

    build/<target>/model.so       the compiled model, weights included, linked for the board
    build/<target>/manifest.json  target JSON, versions, input spec, hashes, tuning, parity, timings
    build/<target>/README.txt     how to run it on the board
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from c2f_edge.compile.bundle import BUNDLE_KIND, LIBRARY
from c2f_edge.compile.readme import WEIGHTS_NOTE, bundle_readme
from c2f_edge.compile.verify import VerifyContext, resolve_verifier, run_verifier
from c2f_edge.core.artifacts import (
    MANIFEST,
    atomic_dir,
    input_spec,
    new_manifest,
    read_manifest,
    sha256_file,
    tool_versions,
    write_json,
)
from c2f_edge.core.errors import ArtifactError, ToolchainError, UsageError
from c2f_edge.core.onnx_file import INPUT_NAME, OUTPUT_NAME, graph_signature, load_onnx, static_input_shape
from c2f_edge.core.progress import Stages
from c2f_edge.export import DEFAULT_ONNX


@dataclass
class CompileConfig:
    target: str
    onnx: str | None = None
    variant: str = "n"
    checkpoint: str | None = None
    weights: str | None = None
    seed: int = 0
    tuning_log: str | None = None  # None: look in tuning_logs/<target>/; "none": untuned; or a directory
    cross_compiler: str | None = None
    out: str | None = None  # default build/<target>
    verify: str = "auto"  # "auto" (local when the bundle runs here), "none", a VERIFIERS name or "rpc://..."
    blocked_layout: bool = True  # False: CPU activations stay NCHW (for scripts/bench_host.py --with-nchw)
    precision: str = "fp32"  # "fp16": half-precision weights and arithmetic (cores with fp16; see backend/precision.py)
    # backend/schedules/split_reduction.py: True / False, or None for the target's default where it applies
    split_reduction: bool | None = None


def _onnx_source(cfg: CompileConfig) -> tuple[str, Path | None]:
    """('given'|'export'|'default', path)."""
    if cfg.onnx:
        return "given", Path(cfg.onnx)
    if cfg.weights or cfg.checkpoint:
        return "export", None
    if DEFAULT_ONNX.is_file():
        return "default", DEFAULT_ONNX
    raise ArtifactError(f"no ONNX model to compile (no --onnx, and {DEFAULT_ONNX} does not exist)",
                        hint="pass --onnx PATH, or --weights synthetic / --checkpoint PATH to export one first")


def _onnx_manifest(onnx_path: Path) -> dict:
    try:
        m = read_manifest(onnx_path.parent)
    except ArtifactError:
        return {}
    return m if m.get("kind") == "onnx" else {}


def _output_shape(onnx_model, batch: int) -> list[int]:
    dims = onnx_model.graph.output[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else batch for d in dims]


def bundle_versions() -> dict:
    """A bundle manifest's `versions`: the tools, the pipeline version and the backend's source digest
    (what scripts/bench_host.py reuses a cached bundle by)."""
    from c2f_edge.backend.pipeline import PIPELINE_VERSION, source_digest

    return {**tool_versions(("ziglang",)), "c2f-edge pipeline": PIPELINE_VERSION,
            "c2f-edge backend source": source_digest()}


def bundle_manifest(cfg: CompileConfig, spec, target_json: dict, onnx_model, onnx_path: Path, source: str,
                    shape: list[int], signature: str, log, tuning_note: str, linker, device_modules: list[str],
                    lib_path: Path) -> dict:
    """What made the bundle: versions, target, input/output spec, source ONNX, tuning, linker, hashes."""
    from c2f_edge.backend import crosslink, precision

    onnx_meta = _onnx_manifest(onnx_path)
    gpu = spec.device == "GPU"
    canon = spec.canonical()
    return new_manifest(
        BUNDLE_KIND,
        versions=bundle_versions(),
        target={"name": spec.name, "description": spec.description, "kind": spec.kind, "device": spec.device,
                "triple": spec.triple, "json": target_json, "resolved": canon,
                **({"host_json": target_json.get("host"), "host_resolved": canon.get("host")} if gpu else {}),
                "source": spec.source},
        runtime={"device": "opencl" if spec.kind == "opencl" else spec.kind if gpu else "cpu",
                 "device_modules": device_modules, "loader": "tvm.runtime.vm.VirtualMachine", "function": "main"},
        input=input_spec(shape, INPUT_NAME),
        output={"name": OUTPUT_NAME, "shape": _output_shape(onnx_model, shape[0]), "dtype": "float32",
                "meaning": "ImageNet-1k logits (no softmax)"},
        onnx={"path": str(onnx_path) if source != "export" else "(exported into the bundle's temp dir)",
              "sha256": sha256_file(onnx_path), "graph_signature": signature,
              "variant": onnx_meta.get("variant"), "weights": onnx_meta.get("weights")},
        weights={"location": LIBRARY, "why": WEIGHTS_NOTE},
        tuning={"status": "tuned" if log else "untuned", "note": tuning_note,
                "log": log.describe() if log else None},
        precision=precision.get(cfg.precision).for_device(gpu).describe(),
        linker=linker.describe(),
        files={LIBRARY: {"sha256": sha256_file(lib_path), "bytes": lib_path.stat().st_size,
                         "elf": crosslink.elf_arch(lib_path)}},
        config=asdict(cfg),
    )


def check_gpu_limits(name: str, lib_path: Path, resolved: dict) -> dict:
    """The OpenCL kernels against the GPU's limits that PoCL would not enforce (local memory, arguments);
    a kernel over one fails the build, since it would fail on the phone."""
    from c2f_edge.backend import opencl_module

    kernels, _ = opencl_module.read(opencl_module.module_bytes(lib_path))
    checked = opencl_module.limits(kernels, resolved)
    if problems := opencl_module.over(checked):
        raise ToolchainError(f"the {name} kernels do not fit the GPU: {problems[0]}",
                             hint="a schedule exceeds the target's limits; check the target's "
                                  "max_shared_memory_per_block / max_function_args")
    return {"kernels": len(kernels), "limits": checked}


def split_reduction_for(wanted: bool | None, spec, target_json: dict, precision_name: str) -> bool:
    """Whether a build takes the split reduction. None: the target's default (targets/*.toml
    `split_reduction`), where it applies; True: refused where it cannot apply."""
    if wanted is None:
        if not spec.split_reduction:
            return False
        try:
            check_split_reduction(spec, target_json, precision_name)
        except UsageError:
            return False
        return True
    if wanted:
        check_split_reduction(spec, target_json, precision_name)
    return wanted


def check_split_reduction(spec, target_json: dict, precision_name: str) -> None:
    """--split-reduction divides a conv's input channels between the target's cores: an fp32 build for a CPU
    target that names them."""
    from c2f_edge.backend.schedules.split_reduction import cores_of
    from c2f_edge.backend.targets import as_target

    if spec.device == "GPU":
        raise UsageError(f"--split-reduction is a CPU schedule; {spec.name} is a GPU target",
                         hint="drop --split-reduction for GPU targets")
    if precision_name != "fp32":
        raise UsageError(f"--split-reduction is for fp32 builds; this one is {precision_name}",
                         hint="drop --split-reduction, or build with --precision fp32")
    if cores_of(as_target(target_json)) < 2:
        raise UsageError(f"--split-reduction divides work between the target's cores, and {spec.name} names "
                         "fewer than 2 (no num-cores)",
                         hint='use a target with "num-cores" (host, rpi4, rpi5, ...) or add it to the target JSON')


def compile_bundle(cfg: CompileConfig) -> Path:
    """Build the bundle for cfg.target into cfg.out (default build/<target>). Returns the bundle dir."""
    from c2f_edge.backend import crosslink, precision, targets, tuning_db
    from c2f_edge.compile.build_job import run_build_job

    t_start = time.perf_counter()
    # Everything that can fail fast does so before any slow step.
    spec = targets.get(cfg.target)
    spec.check()
    precision.check(spec, precision.get(cfg.precision))
    target_json = spec.to_json()
    # The manifest's config records what was built, not what was asked for.
    cfg = replace(cfg, split_reduction=split_reduction_for(cfg.split_reduction, spec, target_json, cfg.precision))
    targets.check_codegen(target_json)
    linker = crosslink.linker_for(spec, cfg.cross_compiler)
    verifier = resolve_verifier(cfg.verify, spec)
    source, onnx_path = _onnx_source(cfg)
    if cfg.tuning_log not in (None, "none"):
        tuning_db.read_log(cfg.tuning_log)  # a wrong directory fails now, not after the export
    onnx_model = load_onnx(onnx_path) if onnx_path else None
    out = Path(cfg.out or Path("build") / spec.name)

    stages = Stages(3 + (source == "export"))
    with atomic_dir(out) as tmp:
        if source == "export":
            from c2f_edge.export import ExportConfig, export_onnx

            with stages.step("exporting ONNX"):
                onnx_path = export_onnx(ExportConfig(variant=cfg.variant, checkpoint=cfg.checkpoint,
                                                     weights=cfg.weights, seed=cfg.seed, out=str(tmp / "onnx")))
                onnx_model = load_onnx(onnx_path)
        # The graph signature is the model identity for tuning logs (weights do not change the kernels).
        signature = _onnx_manifest(onnx_path).get("graph_signature") or graph_signature(onnx_model)
        log, tuning_note = tuning_db.find_log(spec.name, target_json, signature, explicit=cfg.tuning_log,
                                              machine=spec.machine(), precision=cfg.precision)

        shape = static_input_shape(onnx_model, INPUT_NAME)
        lib_path = tmp / LIBRARY
        what = (f"building for {spec.name} ({spec.kind}, {cfg.precision}, {'tuned' if log else 'untuned'}, "
                f"{'split reductions, ' if cfg.split_reduction else ''}"
                f"linked with {linker.name})")
        with stages.step(f"{what}: import, compile, link"):
            job = {"target": cfg.target, "cross_compiler": cfg.cross_compiler, "onnx": str(onnx_path),
                   "shape": shape, "tuning_log": str(log.path) if log else None, "blocked": cfg.blocked_layout,
                   "precision": cfg.precision, "split_reduction": cfg.split_reduction, "out": str(lib_path)}
            built = run_build_job(job, what, verbose=logging.getLogger().isEnabledFor(logging.DEBUG))
        if log and built["records_used"] != log.n_records:  # lines skipped as unreadable
            tuning_note = f"tuned: {log.path} ({built['records_used']} of {log.n_records} records readable)"

        manifest = bundle_manifest(cfg, spec, target_json, onnx_model, onnx_path, source, shape, signature, log,
                                   tuning_note, linker, built["device_modules"], lib_path)
        manifest["tuning"]["kernels"] = built["kernels"]
        if manifest["runtime"]["device"] == "opencl":
            manifest["opencl"] = check_gpu_limits(spec.name, lib_path, manifest["target"]["resolved"])
        if log:
            manifest["tuning"]["log"]["records_used"] = built["records_used"]
        write_json(tmp / MANIFEST, manifest)  # draft: loaders and verifiers read it

        with stages.step("verifying"):
            ctx = VerifyContext(bundle_dir=tmp, onnx_path=onnx_path)
            manifest["parity"] = run_verifier(cfg.verify, verifier, ctx, spec.runs_here, spec.name)
        with stages.step("writing README and manifest"):
            if source == "export":
                shutil.rmtree(tmp / "onnx")
            (tmp / "README.txt").write_text(bundle_readme(spec, manifest))
            manifest["bundle_bytes"] = sum(p.stat().st_size for p in tmp.iterdir() if p.is_file())
            manifest["timings_s"] = {**stages.times, "total": round(time.perf_counter() - t_start, 3)}
            write_json(tmp / MANIFEST, manifest)
    return out
