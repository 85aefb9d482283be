"""Label fidelity: are the content's cells still visible where the copied points say?

Style transfer preserves structure only weakly, so a styled image can lose cells (its count label is
then too high) or grow new cell-like blobs (too low). For one image and its points this module
detects bright blobs and matches them one-to-one to the points:

- ``recall``: share of points with a blob within ``2 sigma`` (1.0 for an image without points);
- ``spurious``: blobs that match no point.

Detection is a scale-normalised Laplacian of Gaussian. The blob scale ``sigma`` is chosen where the
response at the labelled points is strongest (so no cell size has to be given). A peak counts as a
blob if it exceeds ``min_contrast`` (in units of the image's robust intensity range) and stands out
from the background's own structure: median + ``k`` MADs of the response over the pixels farther than
``3 sigma`` from every point. Texture and noise that a style adds thus raise the bar instead of
matching the points by chance. Dense, touching cells merge into one blob, so even the unstyled
content scores below 1 there: compare ``fidelity_recall`` with ``content_recall``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment
from skimage.feature import peak_local_max

from instlib.data.atomic import atomic_write_bytes
from instlib.data.folder import IMAGES, POINTS, list_samples, prepare_output, read_manifest, write_manifest
from instlib.data.images import to_gray
from instlib.data.maps import pixel_index
from instlib.errors import DataError


@dataclass(frozen=True)
class Fidelity:
    """Blob-to-point agreement of one image (see module docstring)."""

    recall: float
    spurious: int
    cells: int
    blobs: int
    sigma: float


def _normalise(image: np.ndarray) -> np.ndarray:
    g = to_gray(np.asarray(image, dtype=np.float32))[..., 0]
    lo, hi = np.median(g), np.percentile(g, 99.5)
    return np.clip((g - lo) / max(hi - lo, 1e-6), 0.0, 1.0)


def _background_threshold(response: np.ndarray, points: np.ndarray, sigma: float, k: float) -> float:
    far = np.ones(response.shape, bool)
    if len(points):
        seeds = np.ones(response.shape, bool)
        seeds[pixel_index(points, response.shape)] = False
        far = ndimage.distance_transform_edt(seeds) > 3 * sigma
    # Too little background (a crowded field): the whole image; the median and MAD shrug off the cells.
    values = response[far] if far.sum() >= max(100, 0.05 * far.size) else response.ravel()
    median = np.median(values)
    return float(median + k * 1.4826 * np.median(np.abs(values - median)))


def detect_blobs(image: np.ndarray, points: np.ndarray, *, min_contrast: float = 0.05,
                 k: float = 8.0) -> tuple[np.ndarray, float]:
    """Blob centres ``(M, 2)`` as ``(X, Y)`` and the scale used, for ``image`` (any channels) and its points."""
    g = _normalise(image)
    sigmas = np.geomspace(1.5, max(3.0, min(g.shape) / 12), 8)
    stack = np.stack([-s * s * ndimage.gaussian_laplace(g, s) for s in sigmas])
    if len(points):
        best = int(np.argmax(np.median(stack[(slice(None), *pixel_index(points, g.shape))], axis=1)))
    else:  # nothing labelled: the scale of the strongest structures, to count what would be spurious
        best = int(np.argmax(np.percentile(stack.reshape(len(sigmas), -1), 99.9, axis=1)))
    sigma = float(sigmas[best])
    response = stack[max(best - 1, 0):best + 2].max(axis=0)
    threshold = max(min_contrast, _background_threshold(response, points, sigma, k))
    peaks = peak_local_max(response, min_distance=max(1, round(sigma)), threshold_abs=threshold, exclude_border=False)
    return peaks[:, ::-1].astype(np.float64) + 0.5, sigma


def measure_fidelity(image: np.ndarray, points: np.ndarray, **detect_kw) -> Fidelity:
    """Recall of ``points`` (``(N, 2)`` ``(X, Y)``) among the blobs of ``image`` and the unmatched blobs."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    blobs, sigma = detect_blobs(image, points, **detect_kw)
    matched = 0
    if len(points) and len(blobs):
        radius = 2.0 * sigma
        dist = np.hypot(points[:, None, 0] - blobs[None, :, 0], points[:, None, 1] - blobs[None, :, 1])
        cost = np.where(dist <= radius, dist, 1e9)
        rows, cols = linear_sum_assignment(cost)
        matched = int((cost[rows, cols] <= radius).sum())
    recall = matched / len(points) if len(points) else 1.0
    return Fidelity(recall=recall, spurious=len(blobs) - matched, cells=len(points), blobs=len(blobs), sigma=sigma)


def measure_folder(folder: str | Path) -> list[dict]:
    """``{name, count, **Fidelity}`` for every image of a folder (e.g. the content, as a baseline)."""
    rows = []
    for s in list_samples(folder):
        img, pts = s.load()
        rows.append({"name": s.name, "count": len(pts), **asdict(measure_fidelity(img, pts))})
    return rows


def filter_by_fidelity(folder: str | Path, min_recall: float, out: str | Path, *, max_spurious: int | None = None,
                       overwrite: bool = False) -> Path:
    """Copy the images of a styled folder whose ``fidelity_recall >= min_recall`` (and, if given,
    ``fidelity_spurious <= max_spurious``) with their points into ``out``; the source is left as it is."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    missing = {"fidelity_recall", "fidelity_spurious"} - set(manifest.columns)
    if missing:
        raise DataError(f"has no {sorted(missing)} in its manifest; it was not written by 'instlib style transfer'",
                        folder)
    keep = manifest["fidelity_recall"] >= min_recall
    if max_spurious is not None:
        keep &= manifest["fidelity_spurious"] <= max_spurious
    settings = {"source": str(folder.resolve()), "min_recall": min_recall, "max_spurious": max_spurious}
    prepare_output(out, "style-filter", settings, overwrite)
    samples = {s.name: s for s in list_samples(folder)}
    for name in manifest.loc[keep, "name"].astype(str):
        if name not in samples:
            raise DataError(f"lists '{name}', which has no image", folder)
        s = samples[name]
        atomic_write_bytes(Path(out) / IMAGES / s.image.name, s.image.read_bytes())
        atomic_write_bytes(Path(out) / POINTS / s.points.name, s.points.read_bytes())
    write_manifest(out, manifest[keep])
    return Path(out)

