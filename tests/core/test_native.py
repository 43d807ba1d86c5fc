"""core.native: one build helper for the project's C (the kernel runner, the qemu plugin)."""

from __future__ import annotations

import subprocess

import pytest

from c2f_edge.core import native
from c2f_edge.core.errors import ToolchainError


def test_a_build_is_cached_by_its_inputs_and_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("C2F_EDGE_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "hello.c"
    src.write_text('#include <stdio.h>\nint main(void) { puts("hi"); return 0; }\n')
    first = native.build("hello", [src], ["gcc"], ["-O1"], hint="apt-get install gcc")
    assert subprocess.run([first], check=True, capture_output=True, text=True).stdout == "hi\n"
    mtime = first.stat().st_mtime_ns
    assert native.build("hello", [src], ["gcc"], ["-O1"], hint="") == first and first.stat().st_mtime_ns == mtime
    assert native.build("hello", [src], ["gcc"], ["-O2"], hint="") != first  # other flags, other build
    src.write_text(src.read_text().replace('"hi"', '"hey"'))
    assert native.build("hello", [src], ["gcc"], ["-O1"], hint="") != first  # other source, other build


def test_a_failed_build_is_one_line_with_the_first_error_and_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("C2F_EDGE_CACHE", str(tmp_path / "cache"))
    src = tmp_path / "bad.c"
    src.write_text("int main(void) { return undeclared; }\nint also = wrong;\n")
    with pytest.raises(ToolchainError, match=r"^building bad failed: .*bad.c:1:.*undeclared") as e:
        native.build("bad", [src], ["gcc"], [], hint="apt-get install gcc")
    assert e.value.hint == "apt-get install gcc" and "\n" not in str(e.value)
    assert list((tmp_path / "cache" / native.CACHE).iterdir()) == []
    with pytest.raises(ToolchainError, match="no-such-cc not found"):
        native.build("bad", [src], ["no-such-cc"], [], hint="install it")
