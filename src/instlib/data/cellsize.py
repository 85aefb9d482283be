"""The cell size of a real data set, measured at its points: what Syn-HC's ``cell_size`` should be.

At each annotated point the scale-normalised Laplacian-of-Gaussian response ``-sigma^2 LoG`` of the grey
image is computed over a geometric range of ``sigma``; for a bright disk of radius ``r`` it peaks at
``sigma = r / sqrt(2)``. The response averaged over an image's points peaks at that image's typical
scale, giving a diameter ``2 sqrt(2) sigma``; the data set's cell size is the median over images.
Only the real images and their points are used, so it holds for any microscope, not one simulator.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from instlib.data.folder import Sample
from instlib.data.images import read_image, to_gray
from instlib.data.points import read_points
from instlib.data.selection import ImageFilter, selected_samples
from instlib.errors import DataError


def image_cell_size(gray: np.ndarray, points: np.ndarray, sigmas: np.ndarray) -> float:
    """Typical cell diameter (pixels) of one ``(H, W)`` grey image at its ``(n, 2)`` X, Y points."""
    cols = np.clip(np.round(points[:, 0]).astype(int), 0, gray.shape[1] - 1)
    rows = np.clip(np.round(points[:, 1]).astype(int), 0, gray.shape[0] - 1)
    response = [_normalised_log(gray, rows, cols, s) for s in sigmas]
    return float(2 * np.sqrt(2) * sigmas[int(np.argmax(response))])


def _normalised_log(gray: np.ndarray, rows: np.ndarray, cols: np.ndarray, sigma: float) -> float:
    """Mean ``-sigma^2 LoG`` at the points. The scale-normalised response is scale invariant, so a large
    ``sigma`` is measured on a block-averaged copy at ``sigma / f`` (``f`` keeps it >= 2 px): a 768 x 1024
    image's 48 scales then cost about a second instead of a minute, and the estimate barely moves."""
    f = max(1, min(int(sigma // 2), min(gray.shape) // 16))
    if f > 1:
        h, w = gray.shape[0] // f * f, gray.shape[1] // f * f
        gray = gray[:h, :w].reshape(h // f, f, w // f, f).mean(axis=(1, 3))
        rows, cols = np.minimum(rows // f, gray.shape[0] - 1), np.minimum(cols // f, gray.shape[1] - 1)
        sigma = sigma / f
    return float(-(sigma ** 2) * ndimage.gaussian_laplace(gray, sigma)[rows, cols].mean())


def estimate_cell_size(real_dir: str | Path, max_images: int = 50, min_diameter: float = 3.0,
                       max_diameter: float = 120.0, select: ImageFilter | None = None) -> float:
    """Median over (up to ``max_images``) images of :func:`image_cell_size`, searched in the given range;
    ``select``: measure only the images it passes (one stain's cells have one size)."""
    return samples_cell_size(selected_samples(real_dir, select), real_dir, max_images, min_diameter, max_diameter)


def samples_cell_size(samples: list[Sample], real_dir: str | Path, max_images: int = 50, min_diameter: float = 3.0,
                      max_diameter: float = 120.0) -> float:
    """:func:`estimate_cell_size` of samples already listed (``real_dir`` names them in errors)."""
    sizes = []
    for sample in samples[:max_images]:
        img = read_image(sample.image)
        points = read_points(sample.points, shape=img.shape[:2])
        if len(points):
            sizes.append(cell_diameter(img, points, min_diameter, max_diameter))
    if not sizes:
        raise DataError("has no annotated cells to measure the cell size at", real_dir)
    return float(np.median(sizes))


def cell_diameter(image: np.ndarray, points: np.ndarray, min_diameter: float = 3.0, max_diameter: float = 120.0
                  ) -> float:
    """:func:`image_cell_size` of an ``(H, W)`` or ``(H, W, C)`` image, in grey brought to ``[0, 1]``,
    searched over 48 scales in the range."""
    gray = to_gray(image)[..., 0].astype(np.float32)
    sigmas = np.geomspace(min_diameter, max_diameter, 48) / (2 * np.sqrt(2))
    return image_cell_size(gray / max(float(gray.max()), 1e-6), points, sigmas)
