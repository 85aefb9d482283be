"""Cross-validation splits stratified by cell count, and a data set's own (official) split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedKFold

from instlib.data.folder import read_manifest
from instlib.errors import DataError

#: The parts of an official split, and the spellings data sets use for them.
PARTS = ("train", "val", "test")
_SPELLINGS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
              "test": "test", "testing": "test"}


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
        raise ValueError(f"need at least 2 folds, got {n_folds}")
    if len(counts) < n_folds:
        raise ValueError(f"{len(counts)} images cannot be split into {n_folds} folds")
    skf = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in skf.split(np.zeros(len(counts)), count_strata(counts, n_folds))]


def official_split(folder: str | Path) -> dict[str, str]:
    """``{image name: "train" | "val" | "test"}`` from the ``split`` column of the folder's manifest.

    Images with an empty ``split`` cell belong to no part. Raises :class:`DataError` when the folder
    has no split column, or a cell names no known part.
    """
    manifest = read_manifest(folder)
    if "split" not in manifest.columns:
        raise DataError("has no 'split' column in its manifest, which --split official needs (IDCIA ships "
                        "train.csv, validation.csv and test.csv: import the folder with them)", folder)
    out = {}
    for name, cell in zip(manifest["name"].astype(str), manifest["split"]):
        if isinstance(cell, float) and np.isnan(cell) or str(cell).strip() == "":
            continue
        part = _SPELLINGS.get(str(cell).strip().lower())
        if part is None:
            raise DataError(f"manifest gives image '{name}' the split '{cell}'; expected one of {', '.join(PARTS)}",
                            folder)
        out[name] = part
    return out


def split_part(folder: str | Path, names: list[str], part: str) -> np.ndarray:
    """Indices of ``names`` (images of ``folder``) in the official ``part``; raises if there are none."""
    split = official_split(folder)
    idx = np.array([i for i, n in enumerate(names) if split.get(n) == part], dtype=np.int64)
    if not len(idx):
        raise DataError(f"its official split has no '{part}' images", folder)
    return idx
