"""scripts/fit_gelu.py: the GELU's coefficients are its fit, reproduced here."""

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "fit_gelu.py"
_spec = importlib.util.spec_from_file_location("fit_gelu", SCRIPT)
fit_gelu = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fit_gelu)


@pytest.fixture(scope="module")
def fitted():
    p, q, _ = fit_gelu.fit(len(fit_gelu.gelu.NUM) - 1, len(fit_gelu.gelu.DEN) - 1)
    return fit_gelu.in_x(p, q)


def test_the_shipped_coefficients_are_the_fit(capsys):
    assert fit_gelu.main(["--check"]) == 0, capsys.readouterr().err
    assert "largest relative difference" in capsys.readouterr().out


@pytest.mark.parametrize("coefficient", [1, 6])
def test_one_coefficient_changed_by_a_thousandth_is_not_the_fit(fitted, coefficient):
    """The check allows for the CPU's rounding of the fit, not for an edited coefficient."""
    num = list(fit_gelu.gelu.NUM)
    num[coefficient] *= 1.001
    assert fit_gelu.check(*fitted, num, fit_gelu.gelu.DEN) == "gelu.py's coefficients are not this fit's"


def test_coefficients_as_close_as_the_tolerance_must_also_err_no_more_than_the_fit(fitted):
    num, den = fitted
    tweaked = [c * (1 + 0.9 * fit_gelu.COEFF_RTOL) for c in num]  # every numerator term: a scaled GELU
    problem = fit_gelu.check(num, den, tweaked, den)
    assert problem is not None and problem.startswith("gelu.py's coefficients err")
