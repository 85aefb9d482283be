"""Counting metrics: MAE, RMSE and ACP (the paper's "acceptable count percentage").

ACP is the percentage of images whose prediction lies within ``tol`` (5%) of the true count:
``|pred - true| <= tol * true``. An error of exactly 5% counts as acceptable (a relative
round-off allowance of 1e-9 keeps that true in floating point). For an image with no cells
(``true == 0``) the allowance is zero, so only a prediction of exactly 0 is acceptable there;
predicted counts are clipped at 0 (see :mod:`instlib.count.predict`), so that can happen.
"""

from __future__ import annotations

import numpy as np

ACP_TOLERANCE = 0.05


def _pair(true, pred) -> tuple[np.ndarray, np.ndarray]:
    t, p = np.asarray(true, dtype=np.float64).ravel(), np.asarray(pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"{t.size} true counts but {p.size} predictions")
    if t.size == 0:
        raise ValueError("no images to score")
    return t, p


def mae(true, pred) -> float:
    """Mean absolute error."""
    t, p = _pair(true, pred)
    return float(np.mean(np.abs(p - t)))


def rmse(true, pred) -> float:
    """Root mean squared error."""
    t, p = _pair(true, pred)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def acp(true, pred, tol: float = ACP_TOLERANCE) -> float:
    """Percentage (0-100) of images with ``|pred - true| <= tol * true``; see the module docstring for true = 0."""
    t, p = _pair(true, pred)
    ok = np.abs(p - t) <= tol * t * (1 + 1e-9)
    return float(100.0 * ok.mean())


def score(true, pred) -> dict[str, float]:
    """``{"mae", "rmse", "acp", "n"}`` of one set of predictions."""
    t, p = _pair(true, pred)
    return {"mae": mae(t, p), "rmse": rmse(t, p), "acp": acp(t, p), "n": int(t.size)}


def score_by(groups, true, pred) -> dict[str, dict[str, float]]:
    """:func:`score` of each group of images (e.g. by stain), plus the mean prediction on its images with
    at most one true cell (``few_mean_pred``, absent without such images): a marker stain counted as dozens
    on its empty fields shows there."""
    g, t, p = np.asarray(groups, dtype=object), *_pair(true, pred)
    out = {}
    for name in sorted(set(g.tolist())):
        mask = g == name
        out[name] = score(t[mask], p[mask])
        few = mask & (t <= 1)
        if few.any():
            out[name]["few_mean_pred"] = float(p[few].mean())
    return out
