"""Stage 1: a Conv2Former checkpoint -> a simplified, self-contained ONNX file with a manifest."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from c2f_edge.core.artifacts import MANIFEST, atomic_dir, input_spec, new_manifest, sha256_file, write_json
from c2f_edge.core.errors import ArtifactError, ExportError, OutputMismatchError, first_line
from c2f_edge.core.metrics import judge, logit_metrics
from c2f_edge.core.onnx_file import INPUT_NAME, OUTPUT_NAME, graph_signature, ort_session, run_ort
from c2f_edge.core.progress import Stages
from c2f_edge.export.trace import DEFAULT_OPSET, trace_to_onnx

# ORT vs torch on fp32: reductions reorder, so not bit-exact; 1e-4 on logits of O(1).
ORT_TOLERANCE = {"max_abs": 1e-4, "top1": 1.0}
# onnxsim only folds and fuses; its output should match the raw graph far tighter than that.
SIMPLIFY_TOLERANCE = {"max_abs": 1e-5, "top1": 1.0}


@dataclass
class ExportConfig:
    variant: str = "n"
    checkpoint: str | None = None
    weights: str | None = None
    seed: int = 0
    opset: int = DEFAULT_OPSET
    batch: int = 1
    dynamic_batch: bool = False
    image_size: int = 224
    out: str = "build/onnx"
    parity_inputs: int = 3


def _simplify(model):
    import onnxsim

    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception as e:
        raise ExportError(f"onnxsim failed: {first_line(e)}", hint="run with -v") from e
    if not ok:
        raise ExportError("onnxsim could not validate the simplified model", hint="run with -v")
    return simplified


def check(ref, out, tolerance: dict, what: str, hint: str) -> dict:
    """Metrics of `out` against `ref`; OutputMismatchError naming `what` if out of `tolerance`."""
    metrics = {k: v for k, v in logit_metrics(ref, out).items() if k != "per_input_max_abs_diff"}
    failures = judge(metrics, tolerance)
    if failures:
        raise OutputMismatchError(f"{what}: {'; '.join(failures)}", hint=hint)
    return metrics


def export_onnx(cfg: ExportConfig, model=None, source=None) -> Path:
    """Export, simplify, verify and write `cfg.out/model.onnx` + manifest. Returns the ONNX path."""
    import onnx
    import torch

    from c2f_edge.core.images import photo_batch
    from c2f_edge.export import scopes
    from c2f_edge.models.weights import load_model

    stages = Stages(5 if model is None else 4)
    t_start = time.perf_counter()
    if model is None:
        with stages.step(f"loading Conv2Former-{cfg.variant.upper()} weights"):
            model, source = load_model(cfg.variant, cfg.checkpoint, cfg.weights, cfg.seed)

    with atomic_dir(cfg.out) as tmp:
        raw_path = tmp / "raw" / "model.onnx"
        raw_path.parent.mkdir()
        with stages.step(f"tracing to ONNX (opset {cfg.opset})"):
            trace_to_onnx(model, raw_path, cfg.opset, cfg.batch, cfg.image_size, cfg.dynamic_batch)
            raw = onnx.load(str(raw_path))
        with stages.step("simplifying with onnxsim"):
            simplified = _simplify(raw)
            out_path = tmp / "model.onnx"
            # One self-contained file: the model is ~60 MB, well under protobuf's 2 GB limit.
            onnx.save_model(simplified, str(out_path), save_as_external_data=False)
            onnx.checker.check_model(str(out_path))
        with stages.step("checking ONNX Runtime against PyTorch"):
            xs = photo_batch(cfg.parity_inputs, cfg.image_size, cfg.seed)
            with torch.no_grad():
                ref = model(torch.from_numpy(xs)).numpy()
            out_raw = run_ort(ort_session(str(raw_path)), xs)
            out_simple = run_ort(ort_session(str(out_path)), xs)
            simp = check(out_raw, out_simple, SIMPLIFY_TOLERANCE, "onnxsim changed the outputs",
                         "report this; export without simplification is not offered because it hides bugs")
            parity = check(ref, out_simple, ORT_TOLERANCE, "ONNX Runtime disagrees with PyTorch",
                           "run with -v; try another --opset")
        with stages.step("writing manifest"):
            import shutil

            # onnxsim drops the exporter's module-scope metadata; keep the module -> tensor map so
            # parity can localize a divergence in this file without re-exporting.
            scopes.save_scopes(raw, tmp / scopes.SCOPES_FILE)
            shutil.rmtree(raw_path.parent)
            batch_dim = "batch" if cfg.dynamic_batch else cfg.batch
            manifest = new_manifest(
                "onnx",
                variant=cfg.variant,
                architecture={"dims": model.dims, "depths": model.depths, "kernel_size": model.kernel_size},
                weights=source.to_dict(),
                input=input_spec([batch_dim, 3, cfg.image_size, cfg.image_size], INPUT_NAME),
                output={"name": OUTPUT_NAME, "shape": [batch_dim, model.num_classes], "dtype": "float32",
                        "meaning": "ImageNet-1k logits (no softmax)"},
                opset=cfg.opset,
                nodes={"before_simplify": len(raw.graph.node), "after_simplify": len(simplified.graph.node)},
                files={"model.onnx": {"sha256": sha256_file(out_path), "bytes": out_path.stat().st_size}},
                graph_signature=graph_signature(simplified),
                parity={"onnxruntime_vs_torch": parity, "simplified_vs_raw": simp,
                        "tolerance": ORT_TOLERANCE["max_abs"]},
                config=asdict(cfg),
                timings_s={**stages.times, "total": round(time.perf_counter() - t_start, 3)},
            )
            write_json(tmp / MANIFEST, manifest)
    return Path(cfg.out) / "model.onnx"


DEFAULT_ONNX = Path("build/onnx/model.onnx")


def ensure_onnx(path: str | None = None) -> Path:
    """The benchmarks' model: `path`, or DEFAULT_ONNX, exported with synthetic weights if it is missing."""
    p = Path(path or DEFAULT_ONNX)
    if p.is_file():
        return p
    if path:
        raise ArtifactError(f"{p} not found", hint="pass an ONNX file written by `c2f-edge export`, or leave "
                                                   f"--onnx out to use {DEFAULT_ONNX} (exported if missing)")
    return export_onnx(ExportConfig(weights="synthetic", out=str(p.parent)))
