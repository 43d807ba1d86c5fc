"""scripts/fit_gelu.py: the GELU's coefficients are its fit, reproduced here."""

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fit_gelu.py"
_spec = importlib.util.spec_from_file_location("fit_gelu", SCRIPT)
fit_gelu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fit_gelu)


def test_the_shipped_coefficients_are_the_fit(capsys):
    assert fit_gelu.main(["--check"]) == 0, capsys.readouterr().err
    assert "largest relative difference" in capsys.readouterr().out
