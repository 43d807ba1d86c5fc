"""`c2f-edge targets`: list what `compile --target` accepts."""

from __future__ import annotations

ORDER = 15

EPILOG = """\
Each target is a TOML file. Add your own board by dropping NAME.toml into a directory listed in
$C2F_EDGE_TARGETS (':'-separated) or ~/.config/c2f-edge/targets/; see c2f_edge/targets.py for the keys.
After the targets, the tuning logs under tuning_logs/ (or $C2F_EDGE_TUNING_LOGS) are listed with
"fits", or "stale: <why>; re-tune on <cpu>" (see the README's Tune section: make retune-host).
`compile --target` also takes a TVM target JSON, e.g.
  --target '{"kind":"llvm","mtriple":"aarch64-linux-gnu","mcpu":"cortex-a55","mattr":["+neon"]}'
"""


def register(sub) -> None:
    import argparse

    p = sub.add_parser("targets", help="list compile targets", description="List the targets `compile` knows.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print each target's resolved TVM target JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    import json

    from c2f_edge.backend import targets, tuning_db
    from c2f_edge.backend.pipeline import PIPELINE_VERSION

    if args.json:
        print(json.dumps({s.name: s.to_json() for s in targets.registry().values()}, indent=2))
        return 0
    _print_table(targets.table(), ["name", "kind", "triple", "device", "description"])
    logs = log_table()
    if logs:
        print(f"\nTuning logs in {tuning_db.default_root()} (STATUS: this TVM, pipeline v{PIPELINE_VERSION} and "
              "the target they were tuned for; the graph is checked by compile):")
        _print_table(logs, ["log", "trials", "status"])
    return 0


def log_table() -> list[dict]:
    """Each tuning log under the default root, with "fits" or "stale: why; re-tune on <cpu>"."""
    from c2f_edge.backend import targets, tuning_db
    from c2f_edge.core.errors import ArtifactError, UnknownTargetError

    rows = []
    for d in tuning_db.log_dirs():
        here, trials = False, "?"
        try:
            log = tuning_db.read_log(d)
            name, trials = log.meta.get("target_name", ""), log.meta.get("trials", "?")
            spec = targets.get(name)
        except ArtifactError as e:  # one broken log must not hide the others
            state = f"unreadable: {e}"
        except UnknownTargetError:
            state = f"stale: tuned for target {name!r}, which is not defined here"
        else:
            state, here = tuning_db.status(log, spec.target), d.name == spec.machine()
        rows.append({"log": str(d.relative_to(tuning_db.default_root())) + (" (this machine)" if here else ""),
                     "trials": trials, "status": state})
    return rows


def _print_table(rows: list[dict], cols: list[str]) -> None:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols[:-1]}
    print("  ".join(c.upper().ljust(widths.get(c, 0)) for c in cols).rstrip())
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths.get(c, 0)) for c in cols).rstrip())
