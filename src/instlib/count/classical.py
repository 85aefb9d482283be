"""The classical baseline: Gaussian smoothing and local maxima, three parameters fitted on training images.

Each image is reduced to gray (mean over channels, ``[0, 1]``), smoothed with a Gaussian of std
``sigma``, and its local maxima at least ``min_distance`` pixels apart and above ``threshold`` times
the smoothed image's maximum are counted as cells (``skimage.feature.peak_local_max``). The three
parameters are grid-searched by MAE on the training images only, then applied to the test images.
A deep counter that does not beat this has learned little.

:func:`instlib.count.cv.cross_validate` runs it as the source ``classical``: fitted on each fold's
training images, tested on its held-out images, one row of ``results.csv`` per fold beside the deep
models'.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage
from skimage.feature import peak_local_max
from tqdm.auto import tqdm

from instlib.count.metrics import score
from instlib.count.bank import ImageBank, load_bank
from instlib.count.predict import true_counts
from instlib.data.folder import list_samples
from instlib.data.maps import center_box

MODEL = "gaussian+local-maxima"


@dataclass(frozen=True)
class PeakParams:
    """One setting of the counter."""

    sigma: float  # std of the Gaussian smoothing, pixels
    min_distance: int  # minimum distance between two maxima, pixels
    threshold: float  # maxima below this fraction of the smoothed image's maximum are ignored


@dataclass(frozen=True)
class PeakGrid:
    """The candidate values searched, each combination once; they span nuclei from a few to ~30 px across."""

    sigmas: tuple[float, ...] = (0.5, 1.0, 2.0, 3.0, 4.0, 6.0)
    min_distances: tuple[int, ...] = (2, 3, 5, 7, 10)
    thresholds: tuple[float, ...] = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8)


def _gray(image) -> np.ndarray:
    return image.numpy().mean(axis=0, dtype=np.float32) / 255.0


def find_peaks(gray: np.ndarray, params: PeakParams) -> np.ndarray:
    """``(N, 2)`` ``(row, col)`` of the cells found in a ``[0, 1]`` gray image."""
    return _peaks(ndimage.gaussian_filter(gray, params.sigma), params.min_distance, params.threshold)


def _peaks(smooth: np.ndarray, min_distance: int, threshold: float) -> np.ndarray:
    return peak_local_max(smooth, min_distance=min_distance, threshold_rel=threshold, exclude_border=False)


def fit(bank: ImageBank, grid: PeakGrid = PeakGrid(), progress: bool = False) -> tuple[PeakParams, float]:
    """``(params, training MAE)``: the grid's setting with the lowest MAE on the labelled ``bank``."""
    true = bank.counts().numpy()
    names = [(s, d, t) for s in grid.sigmas for d in grid.min_distances for t in grid.thresholds]
    row = {name: i for i, name in enumerate(names)}
    found = np.zeros((len(names), len(bank)))
    for i, im in enumerate(tqdm(bank.images, desc="classical fit", unit="image", disable=not progress, leave=False)):
        gray = _gray(im)
        for sigma in grid.sigmas:  # smooth once per sigma
            smooth = ndimage.gaussian_filter(gray, sigma)
            for d in grid.min_distances:
                # Maxima above a higher threshold are those above the lowest whose value clears it
                # (suppression within min_distance keeps the brighter peak): find once, filter per threshold.
                values = smooth[tuple(_peaks(smooth, d, min(grid.thresholds)).T)]
                for t in grid.thresholds:
                    found[row[sigma, d, t], i] = np.count_nonzero(values > max(smooth.min(), t * smooth.max()))
    mae = np.abs(found - true).mean(axis=1)
    best = int(np.argmin(mae))  # the first of ties: the grid's order, not chance, decides
    return PeakParams(*names[best]), float(mae[best])


def count(bank: ImageBank, params: PeakParams, crop_size: int = 200) -> tuple[np.ndarray, np.ndarray]:
    """``(whole-image counts, counts in the centred crop_size box)`` for every image of ``bank``."""
    whole, center = [], []
    for im in bank.images:
        peaks = find_peaks(_gray(im), params)
        top, left, h, w = center_box(tuple(im.shape[1:]), crop_size)
        inside = (peaks[:, 0] >= top) & (peaks[:, 0] < top + h) & (peaks[:, 1] >= left) & (peaks[:, 1] < left + w)
        whole.append(len(peaks))
        center.append(int(inside.sum()))
    return np.array(whole, dtype=np.float64), np.array(center, dtype=np.float64)


def fit_and_count(train: ImageBank, test: ImageBank, *, grid: PeakGrid = PeakGrid(), crop_size: int = 200,
                  progress: bool = False) -> tuple[pd.DataFrame, dict]:
    """Fit on ``train``, count ``test``: ``(predictions, metrics)`` shaped like a training run's."""
    params, train_mae = fit(train, grid, progress)
    pred, pred_center = count(test, params, crop_size)
    true, true_center = true_counts(test, crop_size)
    predictions = pd.DataFrame({"name": test.names, "true": true, "pred": pred,
                                "true_center": true_center, "pred_center": pred_center})
    metrics = {**score(true, pred), "center": score(true_center, pred_center), "params": asdict(params),
               "train_mae": train_mae, "n_train": len(train)}
    return predictions, metrics


def classical_run(train_dirs: Sequence[str | Path], test_dir: str | Path, *, grid: PeakGrid = PeakGrid(),
                  crop_size: int = 200, progress: bool = True) -> tuple[pd.DataFrame, dict]:
    """:func:`fit_and_count` on folders: fit on every image of ``train_dirs``, count ``test_dir``."""
    # List every folder before decoding any, so a mistyped path fails at once.
    train_samples = [s for d in train_dirs for s in list_samples(d)]
    test_samples = list_samples(test_dir)
    train = load_bank(train_samples, progress=progress, desc="decode train")
    test = load_bank(test_samples, progress=progress, desc="decode test")
    return fit_and_count(train, test, grid=grid, crop_size=crop_size, progress=progress)
