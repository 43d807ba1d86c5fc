"""The installation is the one CI tested: every package c2f-edge[dev] pulls in is pinned in
constraints.txt, and what is installed is that pin."""

from __future__ import annotations

import importlib.metadata as md
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

CONSTRAINTS = Path(__file__).resolve().parent.parent / "constraints.txt"


def read_pins(text: str) -> dict[str, Version]:
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        req = Requirement(line)
        (spec,) = req.specifier  # one exact pin per line
        assert spec.operator == "==", f"not an exact pin: {line}"
        pins[canonicalize_name(req.name)] = Version(spec.version)
    return pins


def needed(root: str = "c2f-edge", extras: tuple[str, ...] = ("dev",)) -> dict[str, str]:
    """Installed distributions that `root[extras]` requires, transitively: name -> who needs it."""
    out: dict[str, str] = {}
    todo = [(root, extras)]
    while todo:
        name, extras = todo.pop()
        for text in md.requires(name) or []:
            req = Requirement(text)
            envs = [{"extra": e} for e in extras] or [{"extra": ""}]
            if req.marker is not None and not any(req.marker.evaluate(env) for env in envs):
                continue
            key = canonicalize_name(req.name)
            if key not in out:
                out[key] = name
                todo.append((req.name, tuple(req.extras)))
    return out


def test_pins_parse_and_reject_ranges():
    assert read_pins("# c\ntorch==2.13.0+cpu\nNumPy==2.4.6  # why\n") == {
        "torch": Version("2.13.0+cpu"), "numpy": Version("2.4.6")}
    try:
        read_pins("numpy>=2")
    except AssertionError:
        pass
    else:
        raise AssertionError("a range passed as a pin")


def test_every_installed_dependency_is_pinned_at_its_installed_version():
    pins = read_pins(CONSTRAINTS.read_text())
    deps = needed()
    assert {"torch", "apache-tvm", "apache-tvm-ffi", "pytest"} <= set(deps)
    problems = []
    for name, parent in sorted(deps.items()):
        try:
            have = Version(md.version(name))
        except md.PackageNotFoundError:
            problems.append(f"{name} (needed by {parent}) is not installed")
            continue
        if name not in pins:
            problems.append(f"{name} {have} (needed by {parent}) is not pinned in constraints.txt")
        elif pins[name] != have:
            problems.append(f"{name}: installed {have}, constraints.txt pins {pins[name]}")
    assert not problems, "run `make setup` (or `make lock` after a dependency change):\n" + "\n".join(problems)
