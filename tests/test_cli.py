"""The CLI's contract: one-line errors with a hint, non-zero exits, nothing half-written."""

import pytest
import torch

from c2f_edge.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *needles):
    assert code != 0
    lines = [ln for ln in err.splitlines() if ln.startswith(("error:", "hint:"))]
    assert len([ln for ln in lines if ln.startswith("error:")]) == 1, err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err


def test_help_teaches(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    assert "export" in out and "Pipeline" in out
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    out = capsys.readouterr().out
    assert "NOT trained" in out and "--checkpoint" in out and "manifest.json" in out


def test_unknown_variant(capsys, tmp_path):
    out = tmp_path / "o"
    code, _, err = run(capsys, "export", "--variant", "nano", "--weights", "synthetic", "--out", str(out))
    assert_one_line_error(code, err, "unknown variant 'nano'", "valid variants")
    assert not out.exists()


def test_corrupt_checkpoint(capsys, tmp_path):
    ckpt = tmp_path / "c.pth"
    ckpt.write_bytes(b"\x80\x02garbage" * 50)
    out = tmp_path / "o"
    code, _, err = run(capsys, "export", "--checkpoint", str(ckpt), "--out", str(out))
    assert_one_line_error(code, err, "cannot read checkpoint")
    assert not out.exists()


def test_wrong_variant_checkpoint(capsys, tmp_path):
    from c2f_edge.models import create_model

    ckpt = tmp_path / "t.pth"
    torch.save({"model": create_model("t").state_dict()}, ckpt)
    out = tmp_path / "o"
    code, _, err = run(capsys, "export", "--checkpoint", str(ckpt), "--out", str(out))
    assert_one_line_error(code, err, "does not fit Conv2Former-N", "shape mismatch")
    assert not out.exists()


def test_no_weights_given(capsys, tmp_path):
    code, _, err = run(capsys, "export", "--out", str(tmp_path / "o"))
    assert_one_line_error(code, err, "no weights given", "--weights synthetic")


def test_refuses_to_replace_a_foreign_directory(capsys, tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    code, _, err = run(capsys, "export", "--weights", "synthetic", "--out", str(tmp_path))
    assert_one_line_error(code, err, "not a c2f-edge artifact directory")
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_verbose_shows_traceback(capsys, tmp_path):
    code, _, err = run(capsys, "-v", "export", "--variant", "zz", "--weights", "synthetic")
    assert code != 0 and "Traceback" in err
