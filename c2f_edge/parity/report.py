"""Parity reports: the JSON file (`--json`, schema `c2f-edge.parity/1`) and the Markdown table."""

from __future__ import annotations

import os

from c2f_edge.core.artifacts import new_manifest, write_json
from c2f_edge.parity.localize import describe


def write_report(result: dict, path: str | os.PathLike) -> None:
    """The result plus provenance (versions, host, time). Keys of `result` are the stable schema."""
    meta = new_manifest("parity-report")
    write_json(path, {**result, "created": meta["created"], "host": meta["host"], "versions": meta["versions"]})


def _g(v: float) -> str:
    return f"{v:.2e}" if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e3) else f"{v:.4g}"


def markdown(result: dict) -> str:
    ref = result["reference"]
    inp = result["inputs"]
    lines = [
        (f"Parity vs {ref['label']} fp32 (Conv2Former-{str(ref.get('variant', '?')).upper()}, "
        f"weights {(ref.get('weights') or {}).get('kind', '?')}) on {inp['shape'][0]} {inp['kind']} inputs"),
        "",
        ("| backend | precision | device | n | max abs | mean abs | max rel | cosine min | top-1 | top-5 | status "
        "| diverges at |"),
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for e in result["backends"]:
        m = e["metrics"]
        loc = e.get("localization") or {}
        where = (describe(loc["diverges_at"]) if loc.get("diverges_at")
                 else loc.get("status", "") if loc.get("status") == "unsupported" else "")
        status = "PASS" if e["status"] == "pass" else "**FAIL**"
        lines.append(f"| {e['label']} | {e['precision']} | {e['device']} | {m['n_inputs']} | {_g(m['max_abs_diff'])} "
                     f"| {_g(m['mean_abs_diff'])} | {_g(m['max_rel_diff'])} | {m['cosine_min']:.6f} "
                     f"| {m['top1_agreement']:.0%} | {m['top5_overlap']:.0%} | {status} | {where} |")
    for e in result["backends"]:
        if e["failures"]:
            lines.append("")
            lines.append(f"{e['label']}: " + "; ".join(e["failures"]))
            loc = e.get("localization") or {}
            if loc.get("status") == "ok":
                first = loc["diverges_at"]
                lines.append(f"  first diverging boundary on input {loc['input']!r}: "
                             f"{describe(first) if first else 'none above threshold'} "
                             f"(block {loc['block']}; threshold {loc['threshold']:g} relative; "
                             f"{loc['compared']} boundaries compared)")
            elif loc.get("status") == "unsupported":
                lines.append(f"  not localized: {loc['reason']}")
    return "\n".join(lines)
