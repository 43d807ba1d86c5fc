"""Artifact directories are replaced whole: never merged with the old one, nothing left beside them."""

import json

import pytest

from c2f_edge.core.artifacts import MANIFEST, atomic_dir
from c2f_edge.core.errors import UsageError


def _write(d, files: dict) -> None:
    (d / MANIFEST).write_text(json.dumps({"kind": "test"}))
    for name, text in files.items():
        (d / name).write_text(text)


def _siblings(final):
    return sorted(p.name for p in final.parent.iterdir() if p.name != final.name)


def test_a_new_artifact_replaces_the_old_one_whole(tmp_path):
    final = tmp_path / "bundle"
    with atomic_dir(final) as tmp:
        _write(tmp, {"model.so": "old", "only-old.txt": "x"})
    with atomic_dir(final) as tmp:
        assert final.is_dir() and tmp != final  # the old one stays in place while the new one is written
        _write(tmp, {"model.so": "new"})
    assert sorted(p.name for p in final.iterdir()) == [MANIFEST, "model.so"]  # not merged
    assert (final / "model.so").read_text() == "new"
    assert _siblings(final) == []  # no .tmp-* or .old-* directory left


def test_a_failed_step_keeps_the_old_artifact_and_leaves_nothing(tmp_path):
    final = tmp_path / "bundle"
    with atomic_dir(final) as tmp:
        _write(tmp, {"model.so": "old"})
    with pytest.raises(RuntimeError), atomic_dir(final) as tmp:
        _write(tmp, {"model.so": "half"})
        raise RuntimeError("the link failed")
    assert (final / "model.so").read_text() == "old"
    assert _siblings(final) == []


def test_only_a_c2f_edge_directory_is_replaced(tmp_path):
    final = tmp_path / "mine"
    final.mkdir()
    (final / "notes.txt").write_text("keep me")
    with pytest.raises(UsageError, match="not a c2f-edge artifact directory"), atomic_dir(final):
        pass
    assert (final / "notes.txt").read_text() == "keep me" and _siblings(final) == []
