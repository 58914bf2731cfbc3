"""IQA agreement metrics (scipy): SRCC, KRCC, PLCC and RMSE after the 4-parameter logistic fit.

PLCC and RMSE follow the VQEG convention used across IQA papers (and MA-AGIQA's
``performance.py``): predictions are first mapped to the reference scale with
``f(x) = (b1 - b2) / (1 + exp(-(x - b3) / |b4|)) + b2``.

SRCC and KRCC are bitwise reproducible; PLCC and RMSE are reproducible to a few 1e-6 relative,
not bitwise: numpy's SIMD loops give last-bit differences that depend on where its temporaries sit
in memory, and the iterative fit carries them on to where it stops (two processes scoring the
same predictions can differ there; 1.5e-6 in an RMSE was seen).
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import optimize, stats

__all__ = ["logistic_4p", "fit_logistic", "iqa_metrics"]


def logistic_4p(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    with np.errstate(over="ignore"):  # exp overflow -> inf -> the curve's asymptote, as intended
        return (b1 - b2) / (1.0 + np.exp(-(x - b3) / (np.abs(b4) + 1e-12))) + b2


def fit_logistic(pred: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Map ``pred`` onto ``target``'s scale with the 4-parameter logistic (linear if it fails)."""
    p0 = [target.max(), target.min(), float(np.mean(pred)), float(np.std(pred)) + 1e-6]
    if len(pred) <= len(p0):  # four parameters need more than four points
        slope, intercept = np.polyfit(pred, target, 1)
        return slope * pred + intercept
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            params, _ = optimize.curve_fit(logistic_4p, pred, target, p0=p0, maxfev=20000)
        mapped = logistic_4p(pred, *params)
        if np.all(np.isfinite(mapped)):
            return mapped
    except (RuntimeError, ValueError, optimize.OptimizeWarning):
        pass
    slope, intercept = np.polyfit(pred, target, 1)
    return slope * pred + intercept


def iqa_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """``pred``, ``target`` (N,) -> srcc, krcc, plcc (after logistic fit), rmse (after fit), n."""
    pred = np.asarray(pred, dtype=np.float64).ravel()
    target = np.asarray(target, dtype=np.float64).ravel()
    keep = np.isfinite(pred) & np.isfinite(target)
    pred, target = pred[keep], target[keep]
    if len(pred) < 3 or np.ptp(pred) == 0 or np.ptp(target) == 0:
        nan = float("nan")
        return {"srcc": nan, "krcc": nan, "plcc": nan, "rmse": nan, "n": int(len(pred))}
    mapped = fit_logistic(pred, target)
    return {
        "srcc": float(stats.spearmanr(pred, target).statistic),
        "krcc": float(stats.kendalltau(pred, target).statistic),
        "plcc": float(stats.pearsonr(mapped, target).statistic),
        "rmse": float(np.sqrt(np.mean((mapped - target) ** 2))),
        "n": int(len(pred)),
    }
