"""Paired comparisons of the rows of a cross-validation: which counter is better, by how much, how surely.

Every row (a source x mixing variant, and the classical counter) predicted every test image once per
training seed. For two rows A and B the unit of comparison is the test image: its absolute error
averaged over seeds under A minus the same under B (negative: A counts it better). Folds differ in
difficulty for every counter alike, and pairing by image takes that out of the comparison, which the
spread over folds of each row does not.

For each pair: the mean difference (``delta_mae``), its 95% BCa bootstrap interval over test images
(``scipy.stats.bootstrap``, paired), the two-sided p-value of a paired sign-flip permutation test of the
mean difference (``scipy.stats.permutation_test``), Holm-corrected over the comparisons made
(``p_holm``), and the share of training seeds in which A had the lower MAE. ``mde`` is the smallest
difference the comparison could have detected (5% two-sided, 80% power, from the spread of the
differences): a difference below it going undetected says nothing. A difference is *claimed* only when
its interval excludes 0 and ``p_holm < 0.05``.

:func:`compare_runs` does the same for single runs outside a cross-validation (``count train`` run
folders, ``count classical --out`` or ``count predict --out`` CSVs) that predicted the same test images.
"""

from __future__ import annotations

from itertools import combinations
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from instlib.data.tables import read_table
from instlib.errors import DataError
from instlib.runs.folders import COMPARISONS_FILE, CV_FILE, PREDICTIONS_FILE, RESULTS_FILE, write_csv
from instlib.runs.results import PREDICTIONS_NUMBERS, SOURCE_LABELS, cv_predictions

COLUMNS = ("a", "b", "delta_mae", "ci_low", "ci_high", "p_value", "p_holm", "n_images", "n_seeds",
           "share_a_better", "mde", "claimed")
ALPHA = 0.05
_Z_DETECT = stats.norm.ppf(1 - ALPHA / 2) + stats.norm.ppf(0.8)  # two-sided 5%, 80% power


def row_label(source: str, mix: str) -> str:
    """A row's name in comparisons: the source's display name, with its mixing variant when it mixes."""
    return source if mix == "none" else f"{source} + {mix}"


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm's step-down adjustment of ``p_values`` (family-wise error over all of them)."""
    p = np.asarray(p_values, dtype=float)
    order = np.argsort(p, kind="stable")
    scaled = (len(p) - np.arange(len(p))) * p[order]
    adjusted = np.empty_like(p)
    adjusted[order] = np.minimum(1.0, np.maximum.accumulate(scaled))
    return adjusted


def image_errors(predictions: pd.DataFrame) -> pd.DataFrame:
    """Absolute errors, one column per row (``row_label``), indexed by (test image, seed)."""
    df = predictions.assign(row=[row_label(s, m) for s, m in zip(predictions["source"], predictions["mix"])],
                            error=(predictions["pred"] - predictions["true"]).abs())
    return df.pivot_table(index=["name", "seed"], columns="row", values="error", sort=False)


def _mean_difference(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x - y, axis=axis)


def compare_pair(errors_a: pd.Series, errors_b: pd.Series, *, n_resamples: int = 9999,
                 seed: int = 0) -> dict:
    """The paired comparison of two rows' absolute errors (each indexed by (image, seed))."""
    a = errors_a.dropna().groupby(level="name").mean()
    b = errors_b.dropna().groupby(level="name").mean()
    common = a.index.intersection(b.index)
    if not len(common):
        raise ValueError("the two rows share no test image")
    a, b = a[common].to_numpy(), b[common].to_numpy()
    d = a - b
    delta = float(d.mean())
    rng = np.random.default_rng(seed)
    low = high = delta  # the same difference on every image: no spread to resample
    if np.ptp(d) > 0:
        ci = stats.bootstrap((a, b), _mean_difference, paired=True, method="BCa", n_resamples=n_resamples,
                             random_state=rng).confidence_interval
        low, high = float(ci.low), float(ci.high)
    p = 1.0  # no difference at all, or one image: nothing to test
    if len(d) > 1 and np.any(d != 0):
        p = float(stats.permutation_test((a, b), _mean_difference, permutation_type="samples",
                                         n_resamples=n_resamples, random_state=rng).pvalue)
    return {"delta_mae": delta, "ci_low": low, "ci_high": high, "p_value": p, "n_images": len(common),
            "n_seeds": len(set(errors_a.dropna().index.get_level_values("seed"))
                           | set(errors_b.dropna().index.get_level_values("seed"))),
            "share_a_better": _share_of_seeds(errors_a, errors_b, common),
            "mde": float(_Z_DETECT * d.std(ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")}


def _share_of_seeds(errors_a: pd.Series, errors_b: pd.Series, images: pd.Index) -> float:
    """Share of training seeds in which A's MAE over ``images`` was below B's (a row that did not run a seed,
    such as the deterministic classical counter, stands in with its mean over the seeds it ran)."""
    def by_seed(errors: pd.Series) -> pd.Series:
        e = errors.dropna()
        return e[e.index.get_level_values("name").isin(images)].groupby(level="seed").mean()

    a, b = by_seed(errors_a), by_seed(errors_b)
    seeds = a.index.union(b.index)
    a, b = a.reindex(seeds).fillna(a.mean()), b.reindex(seeds).fillna(b.mean())
    return float((a < b).mean())


def compare(cv_dir: str | Path, baseline: str | None = None, *, n_resamples: int = 9999) -> pd.DataFrame:
    """Every pair of rows of the cross-validation in ``cv_dir`` (with ``baseline``: each row against it).

    Returns the table of :data:`COLUMNS` (see the module docstring); ``claimed`` says whether the
    difference clears the interval and the Holm-corrected test.
    """
    cv_dir = Path(cv_dir)
    if not (cv_dir / CV_FILE).is_file() or not (cv_dir / RESULTS_FILE).is_file():
        raise DataError(f"is not a cross-validation folder (no {CV_FILE} and {RESULTS_FILE}); pass the --out "
                        "folder of 'instlib count cv'", cv_dir)
    errors = image_errors(cv_predictions(cv_dir, mix=None))
    rows = list(errors.columns)
    if baseline is not None:
        baseline = SOURCE_LABELS.get(baseline, baseline)  # a run folder's name (synhc) or the shown one (Syn-HC)
        if baseline not in rows:
            raise DataError(f"has no row '{baseline}' to compare against; its rows: {', '.join(rows)}", cv_dir)
        pairs = [(r, baseline) for r in rows if r != baseline]
    else:
        pairs = list(combinations(rows, 2))
    return comparison_table(errors, pairs, n_resamples)


def comparison_table(errors, pairs: list[tuple[str, str]], n_resamples: int = 9999) -> pd.DataFrame:
    """The comparison table of ``pairs`` of rows of ``errors`` (row name -> errors by (image, seed)), Holm over
    the pairs."""
    table = pd.DataFrame([{"a": a, "b": b, **compare_pair(errors[a], errors[b], n_resamples=n_resamples, seed=i)}
                          for i, (a, b) in enumerate(pairs)], columns=[c for c in COLUMNS if c not in ("p_holm",
                                                                                                    "claimed")])
    table["p_holm"] = holm(table["p_value"].fillna(1.0)) if len(table) else []
    table["claimed"] = (table["p_holm"] < ALPHA) & ((table["ci_high"] < 0) | (table["ci_low"] > 0))
    return table[list(COLUMNS)]


def prediction_errors(path: str | Path) -> pd.Series:
    """Absolute errors of one run's predictions, indexed by (test image, seed 0): a run folder holding
    ``predictions.csv`` or such a CSV (columns ``name, true, pred``)."""
    path = Path(path)
    csv = path / PREDICTIONS_FILE if path.is_dir() else path
    if not csv.is_file():
        raise DataError(f"is neither a run folder with {PREDICTIONS_FILE} nor a predictions CSV", path)
    df = read_table(csv, numbers=PREDICTIONS_NUMBERS)
    missing = [c for c in ("name", "true", "pred") if c not in df.columns]
    if missing:
        raise DataError(f"lacks the column(s) {', '.join(missing)} of a predictions table", csv)
    index = pd.MultiIndex.from_arrays([df["name"], np.zeros(len(df), dtype=int)], names=["name", "seed"])
    return pd.Series((df["pred"] - df["true"]).abs().to_numpy(), index=index)


def compare_runs(paths: list[str | Path], *, n_resamples: int = 9999) -> pd.DataFrame:
    """Every pair of single runs (run folders or predictions CSVs), paired by test image as :func:`compare`;
    rows are named by the folder or file name (the whole path where two names clash)."""
    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise DataError("is one run; compare two or more runs, or pass a cross-validation folder", paths[0])
    names = [p.name if p.is_dir() else p.stem for p in paths]
    labels = names if len(set(names)) == len(names) else [str(p) for p in paths]
    errors = {label: prediction_errors(p) for label, p in zip(labels, paths)}
    for label, p in zip(labels[1:], paths[1:]):
        if not errors[labels[0]].index.intersection(errors[label].index).size:
            raise DataError(f"shares no test image with {paths[0]}", p)
    return comparison_table(errors, list(combinations(labels, 2)), n_resamples)


def write_comparisons(cv_dir: str | Path, baseline: str | None = None) -> pd.DataFrame:
    """:func:`compare`, written to ``cv_dir/comparisons.csv``."""
    table = compare(cv_dir, baseline)
    write_csv(Path(cv_dir) / COMPARISONS_FILE, table)
    return table
