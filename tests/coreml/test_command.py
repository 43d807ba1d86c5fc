"""`c2f-edge coreml` on bad input: a one-line error, a non-zero exit, and no output directory."""

import sys

import pytest

from c2f_edge.cli import main


def _run(capsys, *argv):
    rc = main(["coreml", "--weights", "synthetic", *argv])
    return rc, capsys.readouterr()


def _assert_one_line_error(rc, cap, text):
    assert rc != 0
    lines = [ln for ln in cap.err.splitlines() if ln.startswith(("error:", "hint:"))]
    assert len(lines) == 2 and lines[0].startswith("error:") and text in lines[0], cap.err
    assert "Traceback" not in cap.err


@pytest.mark.parametrize("argv,text", [
    (["--ios", "15"], "unknown iOS version '15'"),
    (["--ios", "18", "--compress", "int3"], "unknown --compress mode 'int3'"),
    (["--ios", "16", "--compress", "int4"], "needs --ios 18"),
    (["--precision", "bf16"], "unknown precision"),
    (["--input", "video"], "unknown input kind"),
])
def test_bad_options(tmp_path, capsys, argv, text):
    out = tmp_path / "out"
    rc, cap = _run(capsys, *argv, "--out", str(out))
    _assert_one_line_error(rc, cap, text)
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_missing_scikit_learn(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.cluster", None)
    out = tmp_path / "out"
    rc, cap = _run(capsys, "--compress", "palettize4", "--out", str(out))
    _assert_one_line_error(rc, cap, "needs scikit-learn")
    assert "pip install" in cap.err
    assert list(tmp_path.iterdir()) == []


def test_bad_labels(tmp_path, capsys):
    labels = tmp_path / "labels.txt"
    labels.write_text("cat\ndog\n")
    rc, cap = _run(capsys, "--labels", str(labels), "--out", str(tmp_path / "out"))
    _assert_one_line_error(rc, cap, "has 2 lines")
    assert not (tmp_path / "out").exists()


def test_out_dir_that_is_not_an_artifact(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    rc, cap = _run(capsys, "--out", str(out))
    _assert_one_line_error(rc, cap, "not a c2f-edge artifact directory")
    assert (out / "notes.txt").read_text() == "keep me"


@pytest.mark.slow
def test_failure_mid_build_leaves_nothing(tmp_path, monkeypatch):
    """A compression that fails after conversion: no output dir, no temp dir beside it, no coremltools temp."""
    import tempfile

    from c2f_edge.core.errors import ExportError
    from c2f_edge.coreml import compress
    from c2f_edge.coreml.convert import CoreMLConfig, build_package
    from tests.fixtures.coreml import tiny_model

    def boom(ml, ct):
        raise RuntimeError("simulated failure")
    monkeypatch.setitem(compress.COMPRESSIONS, "boom", compress.Compression("boom", "fails", 16, (), boom))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "sys_tmp"))
    (tmp_path / "sys_tmp").mkdir()
    model, source = tiny_model()
    out = tmp_path / "build" / "coreml"
    with pytest.raises(ExportError, match="simulated failure"):
        build_package(CoreMLConfig(out=str(out), compress="boom", image_size=64), model=model, source=source)
    assert not out.exists() and list(out.parent.iterdir()) == []
    assert list((tmp_path / "sys_tmp").iterdir()) == []


@pytest.mark.slow
def test_labels_go_into_metadata(tmp_path):
    from c2f_edge.coreml._ct import ct
    from c2f_edge.coreml.convert import CoreMLConfig, build_package
    from tests.fixtures.coreml import tiny_model

    model, source = tiny_model(num_classes=10)
    labels = tmp_path / "labels.txt"
    labels.write_text("".join(f"class {i}\n" for i in range(10)))
    cfg = CoreMLConfig(out=str(tmp_path / "out"), labels=str(labels), image_size=64, check_images=1)
    out = build_package(cfg, model=model, source=source)
    spec = ct().models.MLModel(str(out / "model.mlpackage"), skip_model_load=True).get_spec()
    assert spec.description.metadata.userDefined["com.c2f-edge.labels"].splitlines()[3] == "class 3"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["labels.txt", "out"]
