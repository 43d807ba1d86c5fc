"""The layering of ARCHITECTURE.md, read from the import statements of every module: no import loop,
and no import from a lower layer to a higher one (imports inside functions count too)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "c2f_edge"

# Lowest first. A package may import its own modules and any package of a lower layer; packages of one
# layer do not import each other. The stages are layered in pipeline order.
LAYERS = [
    ["core"],
    ["models", "backend"],
    ["board"],
    ["export"],
    ["coreml"],
    ["compile"],
    ["tune"],
    ["parity"],
    ["profile"],
    ["commands"],
    ["cli"],
]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: set[str]) -> set[str]:
    """c2f_edge modules that `path` imports (a `from pkg import name` counts `pkg.name` if it is a module)."""
    name = module_name(path)
    is_pkg = path.name == "__init__.py"
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.startswith("c2f_edge")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[:len(base) - node.level + (1 if is_pkg else 0)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            if not mod.startswith("c2f_edge"):
                continue
            for a in node.names:
                out.add(f"{mod}.{a.name}" if f"{mod}.{a.name}" in known else mod)
    return {m for m in out if m != name}


def graph() -> dict[str, set[str]]:
    mods = modules()
    known = set(mods)
    return {m: {i for i in imports_of(p, known) if i in known} for m, p in mods.items()}


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m):
        state[m] = 1
        stack.append(m)
        for n in sorted(g.get(m, ())):
            if state.get(n) == 1:
                return stack[stack.index(n):] + [n]
            if n not in state and (c := visit(n)):
                return c
        stack.pop()
        state[m] = 2
        return None

    for m in sorted(g):
        if m not in state and (c := visit(m)):
            return c
    return None


def layer_violations(g: dict[str, set[str]]) -> list[str]:
    bad = []
    for m, deps in g.items():
        pm = package_of(m)
        if pm not in RANK:
            continue
        for d in deps:
            pd = package_of(d)
            if pd == pm or pd == "":  # own package; c2f_edge/__init__ (the version) is for everyone
                continue
            if pd not in RANK:
                bad.append(f"{m} imports {d}, whose package is in no layer")
            elif RANK[pd] >= RANK[pm]:
                bad.append(f"{m} imports {d}: {pd} is not below {pm}")
    return sorted(bad)


def test_every_package_has_a_layer():
    pkgs = {package_of(m) for m in modules()} - {""}
    assert pkgs <= set(RANK), f"packages in no layer of ARCHITECTURE.md: {sorted(pkgs - set(RANK))}"


def test_no_import_loop():
    cycle = find_cycle(graph())
    assert cycle is None, "import loop: " + " -> ".join(cycle)


def test_imports_only_go_down_the_layers():
    bad = layer_violations(graph())
    assert not bad, "\n".join(bad)


def test_the_checks_find_what_they_look_for():
    g = {"c2f_edge.core.a": {"c2f_edge.export.b"}, "c2f_edge.export.b": {"c2f_edge.core.a"}}
    assert find_cycle(g) == ["c2f_edge.core.a", "c2f_edge.export.b", "c2f_edge.core.a"]
    assert layer_violations(g) == ["c2f_edge.core.a imports c2f_edge.export.b: export is not below core"]
    assert layer_violations({"c2f_edge.parity.x": {"c2f_edge.profile.y"}})  # stage order counts
    assert layer_violations({"c2f_edge.models.x": {"c2f_edge.backend.y"}})  # one layer: no cross imports
    assert not layer_violations({"c2f_edge.profile.x": {"c2f_edge.compile.y", "c2f_edge.core.z"}})
