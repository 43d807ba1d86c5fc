"""Stage 1: a Conv2Former checkpoint -> a simplified, self-contained ONNX file with a manifest."""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import os
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from c2f_edge.core.artifacts import MANIFEST, atomic_dir, input_spec, new_manifest, sha256_file, write_json
from c2f_edge.core.errors import ArtifactError, ExportError, OutputMismatchError
from c2f_edge.core.progress import Stages

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
DEFAULT_OPSET = 20
# ORT vs torch on fp32: reductions reorder, so not bit-exact; 1e-4 on logits of O(1).
ORT_ATOL = 1e-4
# onnxsim only folds and fuses; its output should match the raw graph far tighter than that.
SIMPLIFY_ATOL = 1e-5


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


def graph_signature(model) -> str:
    """Hash of an ONNX graph's structure (ops, attributes, initializer shapes), ignoring weight values.

    Tuning records depend on the graph, not the weights, so this is the model identity for them.
    """
    h = hashlib.sha256()
    g = model.graph
    for node in g.node:
        h.update(node.op_type.encode())
        for a in node.attribute:
            h.update(a.SerializeToString())
    for init in sorted(g.initializer, key=lambda t: t.name):
        h.update(str((init.data_type, tuple(init.dims))).encode())
    for v in list(g.input) + list(g.output):
        h.update(v.type.SerializeToString())
    return h.hexdigest()


def load_onnx(path: str | os.PathLike):
    """Read and check an ONNX file; a missing or corrupt file is an ArtifactError."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"ONNX file not found: {path}", hint="run `c2f-edge export` first, or pass --onnx PATH")
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model)
    except Exception as e:  # protobuf and checker raise several unrelated types
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"{path} is not a valid ONNX model: {msg[:200]}",
                            hint="re-create it with `c2f-edge export`") from e
    return model


def _torch_export(model, x, path: Path, cfg: ExportConfig) -> None:
    import torch

    dynamic = {"x": {0: torch.export.Dim("batch", min=1, max=64)}} if cfg.dynamic_batch else None
    # The dynamo exporter keeps Gelu as one op and gives half the nodes of the legacy one.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        logging.getLogger("torch.onnx").setLevel(logging.ERROR)
        try:
            torch.onnx.export(model, (x,), str(path), dynamo=True, opset_version=cfg.opset,
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                              dynamic_shapes=dynamic, external_data=True, verbose=False)
        except Exception as e:
            raise ExportError(f"torch.onnx.export failed at opset {cfg.opset}: {str(e).splitlines()[0][:200]}",
                              hint="try another --opset (18-23); run with -v for the traceback") from e


def _simplify(model):
    import onnxsim

    try:
        simplified, ok = onnxsim.simplify(model)
    except Exception as e:
        raise ExportError(f"onnxsim failed: {str(e).splitlines()[0][:200]}", hint="run with -v") from e
    if not ok:
        raise ExportError("onnxsim could not validate the simplified model", hint="run with -v")
    return simplified


def _ort_run(path_or_bytes, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(path_or_bytes, so, providers=["CPUExecutionProvider"])
    outs = [sess.run(None, {INPUT_NAME: x[i:i + 1]})[0] for i in range(len(x))]
    return np.concatenate(outs)


def parity_inputs(n: int, size: int = 224, seed: int = 0) -> np.ndarray:
    """Real photos first (so top-1 means something), then seeded noise."""
    from c2f_edge.core.images import batch, sample_photos

    photos = batch(sample_photos(min(n, 6), size=size))
    extra = n - len(photos)
    if extra > 0:
        noise = np.random.default_rng(seed).standard_normal((extra, 3, size, size)).astype(np.float32)
        photos = np.concatenate([photos, noise])
    return photos


def compare(ref: np.ndarray, out: np.ndarray) -> dict:
    return {
        "max_abs_diff": float(np.max(np.abs(ref - out))),
        "top1_agreement": float(np.mean(ref.argmax(-1) == out.argmax(-1))),
        "n_inputs": len(ref),
    }


def export_onnx(cfg: ExportConfig, model=None, source=None) -> Path:
    """Export, simplify, verify and write `cfg.out/model.onnx` + manifest. Returns the ONNX path."""
    import onnx
    import torch

    from c2f_edge.models.weights import load_model

    stages = Stages(5 if model is None else 4)
    t_start = time.perf_counter()
    if model is None:
        with stages.step(f"loading Conv2Former-{cfg.variant.upper()} weights"):
            model, source = load_model(cfg.variant, cfg.checkpoint, cfg.weights, cfg.seed)
    x = torch.zeros(cfg.batch, 3, cfg.image_size, cfg.image_size)

    with atomic_dir(cfg.out) as tmp:
        raw_path = tmp / "raw" / "model.onnx"
        raw_path.parent.mkdir()
        with stages.step(f"tracing to ONNX (opset {cfg.opset})"):
            _torch_export(model, x, raw_path, cfg)
            raw = onnx.load(str(raw_path))
        with stages.step("simplifying with onnxsim"):
            simplified = _simplify(raw)
            out_path = tmp / "model.onnx"
            # One self-contained file: the model is ~60 MB, well under protobuf's 2 GB limit.
            onnx.save_model(simplified, str(out_path), save_as_external_data=False)
            onnx.checker.check_model(str(out_path))
        with stages.step("checking ONNX Runtime against PyTorch"):
            xs = parity_inputs(cfg.parity_inputs, cfg.image_size, cfg.seed)
            with torch.no_grad():
                ref = model(torch.from_numpy(xs)).numpy()
            out_raw = _ort_run(str(raw_path), xs)
            out_simple = _ort_run(str(out_path), xs)
            simp = compare(out_raw, out_simple)
            if simp["max_abs_diff"] > SIMPLIFY_ATOL or simp["top1_agreement"] < 1:
                raise OutputMismatchError(
                    f"onnxsim changed the outputs: max abs diff {simp['max_abs_diff']:.3g} > {SIMPLIFY_ATOL}",
                    hint="report this; export without simplification is not offered because it hides bugs")
            parity = compare(ref, out_simple)
            if parity["max_abs_diff"] > ORT_ATOL or parity["top1_agreement"] < 1:
                raise OutputMismatchError(
                    f"ONNX Runtime disagrees with PyTorch: max abs diff {parity['max_abs_diff']:.3g} "
                    f"(tolerance {ORT_ATOL}), top-1 agreement {parity['top1_agreement']:.2f}",
                    hint="run with -v; try another --opset")
        with stages.step("writing manifest"):
            import shutil

            from c2f_edge.export import scopes

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
                parity={"onnxruntime_vs_torch": parity, "simplified_vs_raw": simp, "tolerance": ORT_ATOL},
                config=asdict(cfg),
                timings_s={**stages.times, "total": round(time.perf_counter() - t_start, 3)},
            )
            write_json(tmp / MANIFEST, manifest)
    return Path(cfg.out) / "model.onnx"
