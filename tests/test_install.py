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
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:  # reported by pin_problems, unless it is optional
            continue
        for text in requires:
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


def pin_problems(deps: dict[str, str], pins: dict[str, Version], optional: bool = False) -> list[str]:
    """What differs between the installed `deps` and the pins; with `optional`, a missing package is fine."""
    problems = []
    for name, parent in sorted(deps.items()):
        try:
            have = Version(md.version(name))
        except md.PackageNotFoundError:
            if not optional:
                problems.append(f"{name} (needed by {parent}) is not installed")
            continue
        if name not in pins:
            problems.append(f"{name} {have} (needed by {parent}) is not pinned in constraints.txt")
        elif pins[name] != have:
            problems.append(f"{name}: installed {have}, constraints.txt pins {pins[name]}")
    return problems


def test_every_installed_dependency_is_pinned_at_its_installed_version():
    deps = needed()
    assert {"torch", "apache-tvm", "apache-tvm-ffi", "pytest"} <= set(deps)
    problems = pin_problems(deps, read_pins(CONSTRAINTS.read_text()))
    assert not problems, "run `make setup` (or `make lock` after a dependency change):\n" + "\n".join(problems)


def test_the_bench_extras_are_pinned_where_installed():
    # Optional (`pip install -c constraints.txt 'c2f-edge[bench]'`): the suite runs with or without them,
    # but what is installed is what constraints.txt pins, and `make lock` keeps their pins.
    pins = read_pins(CONSTRAINTS.read_text())
    top = {canonicalize_name(Requirement(r).name) for r in md.requires("c2f-edge") or []
           if 'extra == "bench"' in r}
    assert {"openvino", "pnnx"} <= top <= set(pins), f"unpinned bench extras: {sorted(top - set(pins))}"
    problems = pin_problems(needed(extras=("bench",)), pins, optional=True)
    assert not problems, "run `pip install -c constraints.txt 'c2f-edge[bench]'`:\n" + "\n".join(problems)
