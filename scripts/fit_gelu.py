"""Fit the rational GELU of c2f_edge/backend/legalize/gelu.py and print its coefficients and error.

    python scripts/fit_gelu.py                 # fit (degrees as in gelu.py), print coefficients and error
    python scripts/fit_gelu.py --num 6 --den 4 # another pair of degrees, to compare
    python scripts/fit_gelu.py --check         # the fit reproduces gelu.py's coefficients

GELU(x) = x * max(1/2 + t * P(t^2) / Q(t^2), 0), t = x clamped to [-CLAMP, CLAMP], Q monic: the erf of
exact GELU, x * (1 + erf(x / sqrt 2)) / 2, as one rational function in x with its constants folded in.
The fit is a weighted minimax one (Lawson's iteration over nonlinear least squares) of
R(s) = erf(sqrt s) / sqrt s on s = z^2 in [0, 16] (z = x / sqrt 2 up to 4), the weight being GELU's
absolute error per unit error of R (s / sqrt 2), with the clamp edge weighted as it is for every larger |x|.
The error printed is of the formula evaluated in fp32 (NumPy, in gelu.py's order) against float64 GELU.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from scipy.optimize import least_squares
from scipy.special import erf

from c2f_edge.backend.legalize import gelu

Z_MAX = gelu.CLAMP / np.sqrt(2)  # erf's argument at the clamp
# The minimax optimum is flat, and LAPACK builds round differently per CPU: the same fit lands within
# 1e-7 of gelu.py's coefficients on a Zen 3 and 1.4e-5 away on a rocketlake Xeon, with the same error.
COEFF_RTOL = 1e-4
ERROR_SLACK = 1.05  # gelu.py's fp32 error may exceed this machine's fit's by 5% at most
EDGE_X = 300.0  # |x| the clamp edge's weight stands for (GELU's error there grows with |x|)


def fit(num: int, den: int, rounds: int = 40) -> tuple[np.ndarray, np.ndarray, float]:
    """P (num + 1 coefficients) and Q (den + 1, Q(0) = 1) in s = z^2; and the weighted max error."""
    u = np.append(np.linspace(0.0, 1.0, 20001), 1.0)  # s / Z_MAX^2; the last point is the clamp edge
    s = u * Z_MAX**2
    z = np.sqrt(s)
    r = np.where(z > 0, erf(z) / np.where(z > 0, z, 1.0), 2 / np.sqrt(np.pi))
    w = np.maximum(s, 0.05) / np.sqrt(2)  # floored: erf's own error near 0 counts too
    w[-1] = EDGE_X * Z_MAX / 2

    def split(c):
        return c[: num + 1], np.concatenate([[1.0], c[num + 1:]])

    def err(c):
        p, q = split(c)
        return w * (np.polyval(p[::-1], u) / np.polyval(q[::-1], u) - r)

    c = np.concatenate([np.polynomial.polynomial.polyfit(u, r, num, w=w), np.zeros(den)])
    lawson = np.ones_like(u)
    best = (np.inf, c)
    for _ in range(rounds):
        c = least_squares(lambda c, lw=lawson: err(c) * np.sqrt(lw), c, method="lm", xtol=1e-15, ftol=1e-15,
                          max_nfev=4000).x
        e = np.abs(err(c))
        if np.polyval(split(c)[1][::-1], u).min() > 0 and e.max() < best[0]:
            best = (e.max(), c)
        lawson = lawson * (e / e.mean() + 1e-12)
        lawson /= lawson.mean()
    p, q = split(best[1])
    return p / Z_MAX ** (2 * np.arange(num + 1)), q / Z_MAX ** (2 * np.arange(den + 1)), best[0]  # u -> s


def in_x(p: np.ndarray, q: np.ndarray) -> tuple[list[float], list[float]]:
    """erf(z)/2 = z P(z^2) / (2 Q(z^2)) with z = x / sqrt 2, as t P'(t^2) / Q'(t^2), Q' monic."""
    pk = p * 0.5 ** np.arange(len(p)) * 0.5 / np.sqrt(2)
    qk = q * 0.5 ** np.arange(len(q))
    return [float(v) for v in pk / qk[-1]], [float(v) for v in qk / qk[-1]]


def gelu_fp32(x: np.ndarray, num: list[float], den: list[float]) -> np.ndarray:
    f = np.float32
    x = x.astype(f)
    t = np.clip(x, f(-gelu.CLAMP), f(gelu.CLAMP))
    ss = t * t
    p = gelu.estrin([f(c) for c in num], ss)
    q = gelu.estrin([f(c) for c in den], ss)
    return x * np.maximum(f(0.5) + p * t / q, f(0))


def check(num: list[float], den: list[float], shipped_num, shipped_den) -> str | None:
    """Why the shipped coefficients are not this fit's (None if they are): the degrees, each coefficient
    within COEFF_RTOL, and an fp32 error within ERROR_SLACK of the fit's."""
    if (len(num), len(den)) != (len(shipped_num), len(shipped_den)):
        return "degrees differ from gelu.py's"
    worst = max(abs(a - b) / abs(b) for a, b in zip(num + den, [*shipped_num, *shipped_den], strict=True))
    print(f"largest relative difference from gelu.py's coefficients: {worst:.2g} (at most {COEFF_RTOL:g})")
    if worst > COEFF_RTOL:
        return "gelu.py's coefficients are not this fit's"
    print("gelu.py's coefficients:")
    fitted, shipped = report(num, den, quiet=True), report(list(shipped_num), list(shipped_den))
    if shipped > ERROR_SLACK * fitted:
        return f"gelu.py's coefficients err {shipped:.3g}, this fit's {fitted:.3g}"
    return None


def report(num: list[float], den: list[float], quiet: bool = False) -> float:
    x = np.concatenate([np.linspace(-12, 12, 2_400_001), np.linspace(-1e4, 1e4, 200_001)]).astype(np.float32)
    xd = x.astype(np.float64)
    exact = 0.5 * xd * (1 + erf(xd / np.sqrt(2)))
    e = np.abs(gelu_fp32(x, num, den) - exact)
    near = np.abs(x) <= 12
    if not quiet:
        print(f"fp32 max abs error: {e[near].max():.3g} for |x| <= 12 (at x = {x[near][e[near].argmax()]:.4g}), "
              f"{e.max():.3g} up to |x| = 1e4; relative to |x| beyond 12: {(e[~near] / np.abs(xd[~near])).max():.3g}")
    return float(e[near].max())


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--num", type=int, default=len(gelu.NUM) - 1, help="degree of P in t^2")
    ap.add_argument("--den", type=int, default=len(gelu.DEN) - 1, help="degree of Q in t^2")
    ap.add_argument("--check", action="store_true", help="fail unless the fit reproduces gelu.py's coefficients")
    args = ap.parse_args(argv)
    p, q, weighted = fit(args.num, args.den)
    num, den = in_x(p, q)
    print(f"P degree {args.num}, Q degree {args.den} (in t^2); weighted max error of the fit {weighted:.3g}")
    print(f"NUM = {tuple(float(f'{c:.9g}') for c in num)}")
    print(f"DEN = {tuple(float(f'{c:.9g}') for c in den)}")
    report(num, den)
    if args.check:
        problem = check(num, den, gelu.NUM, gelu.DEN)
        if problem:
            print(f"error: {problem}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
