"""Bad input to every command: a non-zero exit, one `error:` line with a `hint:`, no traceback, and no
artifact left behind. One table; the rows that need a built artifact get it from the session fixtures."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from c2f_edge.cli import main


@dataclass
class Row:
    id: str
    argv: list[str]  # "{tmp}", "{out}" and fixture names in braces are filled in
    says: str  # a fragment of the error line
    code: int = 2
    fixtures: tuple[str, ...] = ()
    prepare: object = None  # fn(tmp, fixtures) -> None, e.g. to damage a copy of an artifact
    extra: list[str] = field(default_factory=list)


def _garbage(path: Path, data: bytes = b"\x08\x07 not protobuf") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _copy(src, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _cut_log(tmp, fx):  # a log whose last record was cut off mid-write, in a directory of its own
    log = _copy(fx["tiny_tuned"], tmp / "cutlog")
    rec = log / "database_tuning_record.json"
    rec.write_bytes(rec.read_bytes()[:-40])


def _broken_log(tmp, fx):  # every record line garbage
    log = _copy(fx["tiny_tuned"], tmp / "badlog")
    (log / "database_tuning_record.json").write_text("{not json\n[1, 2\n")


def _tampered(tmp, fx):  # bytes appended to model.so: still loadable, but not what the manifest hashed
    b = _copy(fx["tiny_bundle"], tmp / "tampered")
    with open(b / "model.so", "ab") as f:
        f.write(b"\0" * 4096)


def _flipped(tmp, fx):  # 4 KB of model.so inverted: a half-copied or damaged file
    b = _copy(fx["tiny_bundle"], tmp / "flipped")
    data = bytearray((b / "model.so").read_bytes())
    mid = len(data) // 2
    data[mid:mid + 4096] = bytes(255 - v for v in data[mid:mid + 4096])
    (b / "model.so").write_bytes(bytes(data))


ONNX = "{tiny_onnx}"
ROWS = [
    Row("unknown-target", ["compile", "--target", "rpi", "--onnx", ONNX, "--out", "{out}"], "unknown target 'rpi'",
        fixtures=("tiny_onnx",)),
    Row("no-vulkan-codegen", ["compile", "--target", "vulkan", "--onnx", ONNX, "--out", "{out}"],
        "no vulkan code generator", fixtures=("tiny_onnx",)),
    Row("bogus-triple-used-to-segfault", ["compile", "--target", '{"kind":"llvm","mtriple":"bogus-none"}',
                                          "--onnx", ONNX, "--out", "{out}"],
        "LLVM does not know the target triple 'bogus-none'", fixtures=("tiny_onnx",)),
    Row("unknown-mcpu", ["compile", "--target", '{"kind":"llvm","mtriple":"aarch64-linux-gnu","mcpu":"cortex-a999"}',
                         "--onnx", ONNX, "--out", "{out}"], "LLVM knows no CPU 'cortex-a999'", fixtures=("tiny_onnx",)),
    Row("unknown-mattr", ["compile", "--target", '{"kind":"llvm","mtriple":"aarch64-linux-gnu","mattr":["+neno"]}',
                          "--onnx", ONNX, "--out", "{out}"], "LLVM knows no feature 'neno'", fixtures=("tiny_onnx",)),
    Row("target-json-syntax", ["compile", "--target", '{"kind": llvm}', "--onnx", ONNX, "--out", "{out}"],
        "does not parse", fixtures=("tiny_onnx",)),
    Row("corrupt-onnx", ["compile", "--target", "host", "--onnx", "{tmp}/bad/model.onnx", "--out", "{out}"],
        "is not a valid ONNX model", prepare=lambda tmp, fx: _garbage(tmp / "bad" / "model.onnx")),
    Row("missing-onnx", ["compile", "--target", "host", "--onnx", "{tmp}/none.onnx", "--out", "{out}"],
        "ONNX file not found"),
    Row("unreadable-tuning-log", ["compile", "--target", "host", "--onnx", ONNX, "--tuning-log", "{tmp}/badlog",
                                  "--out", "{out}"], "has no readable record",
        fixtures=("tiny_onnx", "tiny_tuned"), prepare=_broken_log),
    Row("verify-local-cross", ["compile", "--target", "arm64", "--onnx", ONNX, "--verify", "local", "--out",
                               "{out}"], "cannot run on this machine", fixtures=("tiny_onnx",)),
    Row("tampered-bundle-parity", ["parity", "{tmp}/tampered", "-n", "1"], "model.so does not match its manifest",
        fixtures=("tiny_bundle",), prepare=_tampered),
    Row("flipped-bundle-profile", ["profile", "--artifact", "{tmp}/flipped", "--local", "--repeat", "1"],
        "model.so does not match its manifest", fixtures=("tiny_bundle",), prepare=_flipped),
    Row("cross-bundle-profile-local", ["profile", "--artifact", "{tiny_arm64_bundle}", "--local", "--repeat", "1"],
        "cannot run on this x86_64 machine", fixtures=("tiny_arm64_bundle",)),
    Row("cross-bundle-parity", ["parity", "{tiny_arm64_bundle}", "-n", "1"], "does not run on this machine",
        fixtures=("tiny_arm64_bundle",)),
    Row("missing-artifact", ["parity", "{tmp}/nothing"], "artifact not found"),
    Row("corrupt-checkpoint", ["export", "--checkpoint", "{tmp}/c.pth", "--out", "{out}"], "cannot read checkpoint",
        prepare=lambda tmp, fx: _garbage(tmp / "c.pth", b"PK\x03\x04 truncated zip")),
    Row("unknown-variant", ["export", "--variant", "zz", "--weights", "synthetic", "--out", "{out}"],
        "unknown variant 'zz'"),
    Row("int4-needs-ios18", ["coreml", "--weights", "synthetic", "--compress", "int4", "--out", "{out}"],
        "needs --ios 18"),
    Row("tune-cross-target-no-board", ["tune", "--target", "arm64", "--onnx", ONNX, "--work-dir", "{out}"],
        "is not this machine", fixtures=("tiny_onnx",)),
    Row("tune-unreachable-tracker", ["tune", "--target", "host", "--onnx", ONNX, "--work-dir", "{out}",
                                     "--rpc-tracker", "127.0.0.1:{free_port}", "--rpc-key", "rpi4"],
        "cannot reach", code=3, fixtures=("tiny_onnx",)),
    Row("profile-unreachable-tracker", ["profile", "--artifact", "{tiny_bundle}", "--rpc-tracker",
                                        "127.0.0.1:{free_port}", "--rpc-key", "rpi4", "--timeout", "20"],
        "cannot reach", code=3, fixtures=("tiny_bundle",)),
]


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_is_one_clean_error(row: Row, request, tmp_path, capsys):
    from c2f_edge.board.rpc import free_port

    fx = {name: request.getfixturevalue(name) for name in row.fixtures}
    if row.prepare:
        row.prepare(tmp_path, fx)
    out = tmp_path / "out"
    values = {"tmp": str(tmp_path), "out": str(out), "free_port": str(free_port()), **{k: str(v) for k, v in fx.items()}}
    argv = [a.format(**values) if "{" in a and not a.startswith("{\"") and not a.startswith("{ ") else a
            for a in row.argv]
    rc = main(argv)
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == row.code, err
    assert len(errors) == 1 and row.says in errors[0], err
    assert any(ln.startswith("hint:") for ln in err.splitlines()), err
    assert "Traceback" not in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_a_cut_off_tuning_log_is_read_without_its_last_line(tiny_onnx, tiny_tuned, tmp_path, capsys):
    """A record cut off by a killed run used to stop compile with a native error; now that line is
    skipped with a warning naming it, and the rest of the log is applied."""
    _cut_log(tmp_path, {"tiny_tuned": tiny_tuned})
    n_lines = len((tmp_path / "cutlog" / "database_tuning_record.json").read_text().splitlines())
    out = tmp_path / "b"
    assert main(["compile", "--target", "host", "--onnx", str(tiny_onnx), "--tuning-log", str(tmp_path / "cutlog"),
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"skipped 1 unreadable line(s) of the tuning log {tmp_path / 'cutlog'}: " \
           f"database_tuning_record.json:{n_lines}" in err
    m = json.loads((out / "manifest.json").read_text())
    assert m["tuning"]["status"] == "tuned" and m["tuning"]["kernels"]["from_log"] >= 1
    assert m["tuning"]["log"]["records_used"] == n_lines - 1
    assert f"({n_lines - 1} of {n_lines} records readable)" in m["tuning"]["note"]


def test_no_verify_hash_loads_a_changed_bundle(tiny_bundle, tmp_path, capsys):
    _tampered(tmp_path, {"tiny_bundle": tiny_bundle})
    argv = ["profile", "--artifact", str(tmp_path / "tampered"), "--local", "--repeat", "2", "--warmup", "0"]
    assert main(argv) == 2 and "does not match its manifest" in capsys.readouterr().err
    assert main([*argv, "--no-verify-hash"]) == 0
    import os

    from c2f_edge.core.artifacts import VERIFY_HASH_ENV

    assert VERIFY_HASH_ENV not in os.environ  # the switch was for that one command


# --- target resolution never crashes, whatever the JSON ------------------------------------------------

# Valid values are listed several times (in sampled_from, and as repeated strategies of st.one_of) so
# that a good share of the drawn targets resolve; the rest is every kind of wrong.
_VALID_TRIPLES = st.sampled_from(["aarch64-linux-gnu", "armv7l-linux-gnueabihf", "x86_64-linux-gnu"])
_KINDS = st.sampled_from(["llvm"] * 12 + ["opencl", "c", "cuda", "vulkan", "llvmx", "", 0, -1, 7])
_TRIPLES = st.one_of(*[st.none()] * 3, *[_VALID_TRIPLES] * 3,
                     st.sampled_from(["arm64-apple-darwin", "riscv64-linux-gnu", "bogus-none", "aarch64", "-",
                                      "thumbv7-none-eabi", "i686-pc-linux-gnu"]),
                     st.text(max_size=12), st.integers())
_CPUS = st.one_of(*[st.none()] * 8, st.sampled_from(["generic", "cortex-a76", "cortex-a72", "cortex-a7", "cortex-a999",
                                                     "znver3", "apple-m1", ""]),
                  st.text(max_size=8), st.integers())
_ATTRS = st.one_of(*[st.none()] * 8, st.lists(st.sampled_from(["+neon", "+fullfp16", "-neon", "+neno", "neon", "+",
                                                              "+sve", "+avx2", "+d32"]), max_size=3),
                   st.text(max_size=6), st.lists(st.integers(), max_size=2))


@st.composite
def target_dicts(draw):
    t = {"kind": draw(_KINDS)}
    if t["kind"] == "llvm" or draw(st.integers(0, 4)) == 0:  # now and then LLVM fields on another kind
        for key, strat in (("mtriple", _TRIPLES), ("mcpu", _CPUS), ("mattr", _ATTRS)):
            value = draw(strat)
            if value is not None:
                t[key] = value
    if t["kind"] != "llvm" and draw(st.booleans()):  # a GPU target's host: checked like a CPU target
        t["host"] = {"kind": "llvm", **({"mtriple": draw(_TRIPLES)} if draw(st.booleans()) else {})}
    return t


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(target_dicts())
def test_any_target_json_resolves_or_is_a_clean_error(t):
    from c2f_edge.backend import targets
    from c2f_edge.core.errors import C2FError

    try:
        targets.get(json.dumps(t)).check()  # check() is what compile and tune do next
        event("resolved")
    except C2FError as e:
        assert str(e) and "\n" not in str(e)
        event("clean error: " + " ".join(str(e).split()[:4]))
