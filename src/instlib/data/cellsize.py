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

from instlib.data.images import read_image, to_gray
from instlib.data.points import read_points
from instlib.data.selection import ImageFilter, selected_samples
from instlib.errors import DataError


def image_cell_size(gray: np.ndarray, points: np.ndarray, sigmas: np.ndarray) -> float:
    """Typical cell diameter (pixels) of one grey image at its ``(n, 2)`` X, Y points."""
    cols = np.clip(np.round(points[:, 0]).astype(int), 0, gray.shape[1] - 1)
    rows = np.clip(np.round(points[:, 1]).astype(int), 0, gray.shape[0] - 1)
    response = [-(s ** 2) * ndimage.gaussian_laplace(gray, s)[rows, cols].mean() for s in sigmas]
    return float(2 * np.sqrt(2) * sigmas[int(np.argmax(response))])


def estimate_cell_size(real_dir: str | Path, max_images: int = 50, min_diameter: float = 3.0,
                       max_diameter: float = 120.0, select: ImageFilter | None = None) -> float:
    """Median over (up to ``max_images``) images of :func:`image_cell_size`, searched in the given range;
    ``select``: measure only the images it passes (one stain's cells have one size)."""
    sigmas = np.geomspace(min_diameter, max_diameter, 48) / (2 * np.sqrt(2))
    sizes = []
    for sample in selected_samples(real_dir, select)[:max_images]:
        img = read_image(sample.image)
        points = read_points(sample.points, shape=img.shape[:2])
        if len(points):
            gray = to_gray(img).astype(np.float32)
            sizes.append(image_cell_size(gray / max(float(gray.max()), 1e-6), points, sigmas))
    if not sizes:
        raise DataError("has no annotated cells to measure the cell size at", real_dir)
    return float(np.median(sizes))
