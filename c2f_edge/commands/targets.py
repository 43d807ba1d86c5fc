"""`c2f-edge targets`: list what `compile --target` accepts."""

from __future__ import annotations

ORDER = 15

EPILOG = """\
Each target is a TOML file. Add your own board by dropping NAME.toml into a directory listed in
$C2F_EDGE_TARGETS (':'-separated) or ~/.config/c2f-edge/targets/; see c2f_edge/targets.py for the keys.
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

    from c2f_edge.backend import targets

    if args.json:
        print(json.dumps({s.name: s.to_json() for s in targets.registry().values()}, indent=2))
        return 0
    rows = targets.table()
    cols = ["name", "kind", "triple", "device", "description"]
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols[:-1]}
    print("  ".join(c.upper().ljust(widths.get(c, 0)) for c in cols).rstrip())
    for r in rows:
        print("  ".join(str(r[c]).ljust(widths.get(c, 0)) for c in cols).rstrip())
    return 0
