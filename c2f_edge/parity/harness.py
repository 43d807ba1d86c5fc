"""The parity run: the torch fp32 reference, every backend on the same inputs, metrics, localization.

The reference and the backends meet only here. Backends are prepared from (artifact, plain options)
and given read-only input batches; the harness alone holds reference outputs and compares.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from c2f_edge.core.errors import C2FError, OutputMismatchError, UnsupportedError
from c2f_edge.core.metrics import judge, logit_metrics, tolerances
from c2f_edge.core.progress import Stages
from c2f_edge.parity import localize
from c2f_edge.parity.backends import Backend, make_backend
from c2f_edge.parity.inputs import InputSet

SCHEMA = "c2f-edge.parity/1"


@dataclass
class BackendSpec:
    name: str
    artifact: str
    options: dict = field(default_factory=dict)
    max_inputs: int | None = None  # e.g. 2 on an emulated board, which is ~10-500x slower


def _run_all(b: Backend, x: np.ndarray) -> np.ndarray:
    outs = []
    for i in range(len(x)):
        xi = x[i:i + 1]
        outs.append(np.asarray(b.run(xi), np.float32).reshape(1, -1))
    return np.concatenate(outs)


def run_parity(specs: list[BackendSpec], inputs: InputSet, reference: BackendSpec | None = None,
               tol: dict | None = None, localize_failures: bool = True, quiet: bool = False) -> dict:
    """Run every backend against the torch reference. Returns the report dict (see report.py);
    does not raise on a mismatch (`raise_on_failure` does), but does raise on unusable artifacts."""
    tol = tol or tolerances()
    reference = reference or BackendSpec("torch", specs[0].artifact if specs else "")
    stages = Stages(1 + len(specs), stream=None) if not quiet else None
    t0 = time.perf_counter()
    ref_backend = make_backend(reference.name, reference.artifact, reference.options)
    with _step(stages, f"reference: {ref_backend.label} on {len(inputs)} inputs"):
        ref_out = _run_all(ref_backend, inputs.x)
    names = ref_backend.boundaries()  # where a divergence can be localized ([]: not with this reference)
    entries = []
    for spec in specs:
        x = inputs.x[:spec.max_inputs] if spec.max_inputs else inputs.x
        backend = make_backend(spec.name, spec.artifact, spec.options)
        try:
            with _step(stages, f"{backend.label}: {len(x)} inputs on {backend.device}"):
                t = time.perf_counter()
                out = _run_all(backend, x)
                seconds = time.perf_counter() - t
            metrics = logit_metrics(ref_out[:len(x)], out)
            limits = tol[backend.precision]
            failures = judge(metrics, limits)
            entry = {**backend.info(), "status": "fail" if failures else "pass", "failures": failures,
                     "metrics": metrics, "tolerance": limits, "inputs": inputs.names[:len(x)],
                     "seconds": round(seconds, 3), "localization": None}
            if failures and localize_failures and names:
                if stages:
                    stages.total += 1
                with _step(stages, f"{backend.label}: localizing the divergence"):
                    entry["localization"] = _localize(ref_backend, backend, x, metrics, names, limits["localize"],
                                                      inputs.names)
            entries.append(entry)
        finally:
            backend.close()
    return {
        "schema": SCHEMA,
        "passed": all(e["status"] == "pass" for e in entries),
        "reference": ref_backend.info(),
        "inputs": inputs.to_dict(),
        "tolerances": {e["precision"]: e["tolerance"] for e in entries},
        "backends": entries,
        "seconds": round(time.perf_counter() - t0, 2),
    }


def _localize(ref: Backend, backend: Backend, x: np.ndarray, metrics: dict, names: list[str], threshold: float,
              input_names: list[str]) -> dict:
    """Compare module-boundary activations on the input with the largest logit difference."""
    worst = int(np.argmax(metrics["per_input_max_abs_diff"]))
    xi = x[worst:worst + 1]
    try:
        got = backend.probe(xi, names)
    except UnsupportedError as e:
        return {"status": "unsupported", "reason": str(e), "hint": e.hint}
    if isinstance(got, localize.KernelOutputs):  # a fused artifact's own kernel outputs: find the boundaries
        ref_acts = ref.probe(xi, names)
        aligned, kernels = localize.align(ref_acts, names, got, threshold)
        res = localize.first_divergence(ref_acts, aligned, names, threshold)
        return {"status": "ok", "input": input_names[worst], **res, "method": "kernel outputs",
                "where": got.where, "kernels": len(got), "kernel_of": kernels}
    ref_acts = ref.probe(xi, [n for n in names if n in got])
    res = localize.first_divergence(ref_acts, got, names, threshold)
    return {"status": "ok", "input": input_names[worst], **res}


class _step:
    def __init__(self, stages, name):
        self.cm = stages.step(name) if stages else None

    def __enter__(self):
        return self.cm.__enter__() if self.cm else None

    def __exit__(self, *exc):
        return self.cm.__exit__(*exc) if self.cm else False


def raise_on_failure(result: dict) -> None:
    bad = [e for e in result["backends"] if e["status"] != "pass"]
    if not bad:
        return
    parts = []
    for e in bad:
        where = ""
        loc = e.get("localization") or {}
        if loc.get("diverges_at"):
            where = f", diverges at {loc['diverges_at']}"
        parts.append(f"{e['label']} ({e['failures'][0]}{where})")
    raise OutputMismatchError(f"parity failed for {len(bad)} backend(s): " + "; ".join(parts),
                              hint="see the table above (and --json) for every metric; a wrong artifact needs "
                                   "a rebuild, a tolerance you accept goes in --tol CLASS.KEY=VALUE")


def record_in_manifests(result: dict) -> list[str]:
    """Write each backend's entry into its artifact's manifest under parity.harness; returns the dirs."""
    from c2f_edge.core.artifacts import read_manifest, update_manifest

    done = []
    for e in result["backends"]:
        p = Path(e["artifact"])
        d = p.parent if p.is_file() or p.suffix == ".mlpackage" else p
        try:
            existing = read_manifest(d).get("parity")
        except C2FError:
            continue
        section = dict(existing) if isinstance(existing, dict) else {}
        section.setdefault("harness", {})[e["label"]] = {
            "schema": result["schema"], "status": e["status"], "metrics": _short(e["metrics"]),
            "tolerance": e["tolerance"], "precision": e["precision"], "device": e["device"],
            "inputs": result["inputs"]["kind"], "n_inputs": e["metrics"]["n_inputs"],
            "reference": "torch fp32", "diverges_at": (e.get("localization") or {}).get("diverges_at"),
        }
        update_manifest(d, "parity", section)
        done.append(str(d))
    return done


def _short(m: dict) -> dict:
    return {k: v for k, v in m.items() if k != "per_input_max_abs_diff"}
