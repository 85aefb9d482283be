"""Cross-validation splits stratified by cell count, and a data set's own (official) split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from instlib.data.subsets import split_names
from instlib.errors import ArgumentError, DataError


def count_strata(counts: np.ndarray, n_folds: int) -> np.ndarray:
    """Bin counts into quantile strata, each with at least ``n_folds`` members where possible.

    Raw counts are nearly all distinct, so they cannot be stratified on directly; quantile bins of
    size >= ``n_folds`` give every fold a share of low, middle and high counts.
    """
    counts = np.asarray(counts, dtype=np.float64)
    n_bins = max(1, len(counts) // n_folds)
    order = np.argsort(counts, kind="stable")
    strata = np.empty(len(counts), dtype=np.int64)
    strata[order] = np.minimum(np.arange(len(counts)) // n_folds, n_bins - 1)
    return strata


def stratified_kfold(counts, n_folds: int = 5, seed: int = 42) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(train_idx, test_idx), ...]`` for ``n_folds`` folds stratified by count (shuffled, ``seed``)."""
    counts = np.asarray(counts)
    if n_folds < 2:
        raise ArgumentError(f"need at least 2 folds, got {n_folds}")
    if len(counts) < n_folds:
        raise ArgumentError(f"{len(counts)} images cannot be split into {n_folds} folds")
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in skf.split(np.zeros(len(counts)), count_strata(counts, n_folds))]


def split_part(folder: str | Path, names: list[str], part: str) -> np.ndarray:
    """Indices of ``names`` (images of ``folder``) in the official ``part`` (``train``, ``val`` or ``test``)
    of the folder's ``split`` manifest column; raises :class:`DataError` if there are none."""
    members = split_names(folder)[part]
    idx = np.array([i for i, n in enumerate(names) if n in members], dtype=np.int64)
    if not len(idx):
        raise DataError(f"its official split has no '{part}' images", folder)
    return idx
