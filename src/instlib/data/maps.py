"""Label maps derived from points: dot maps, Gaussian density maps, crops that carry their points."""

from __future__ import annotations

import numpy as np


def pixel_index(points: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` of the pixels holding each ``(X, Y)`` point, clipped into ``shape=(H, W)``."""
    h, w = shape
    rows = np.clip(np.floor(points[:, 1]).astype(np.int64), 0, h - 1)
    cols = np.clip(np.floor(points[:, 0]).astype(np.int64), 0, w - 1)
    return rows, cols


def dot_map(points: np.ndarray, shape: tuple[int, int], dtype=np.float32) -> np.ndarray:
    """``(H, W)`` map with the number of points in each pixel (sum = count, also for shared pixels)."""
    rows, cols = pixel_index(points, shape)
    flat = np.bincount(rows * shape[1] + cols, minlength=shape[0] * shape[1])
    return flat.reshape(shape).astype(dtype)


def density_map(points: np.ndarray, shape: tuple[int, int], sigma: float = 4.0, truncate: float = 3.0) -> np.ndarray:
    """``(H, W) float32`` Gaussian density map whose sum equals the number of points.

    Each point spreads a Gaussian (std ``sigma`` px, cut at ``truncate * sigma``) centred on its exact
    sub-pixel position; the part that would fall outside the image is renormalised back onto the
    pixels inside, so border cells still count as exactly one.
    """
    h, w = shape
    if len(points) == 0:
        return np.zeros(shape, np.float32)
    r = max(1, int(np.ceil(truncate * sigma)))
    off = np.arange(-r, r + 1)
    # Vectorised over all points: (N, K, K) patches of pixel centres around each point's pixel.
    rows, cols = pixel_index(points, shape)
    pr = rows[:, None, None] + off[None, :, None]
    pc = cols[:, None, None] + off[None, None, :]
    d2 = (pr + 0.5 - points[:, 1, None, None]) ** 2 + (pc + 0.5 - points[:, 0, None, None]) ** 2
    wgt = np.exp(-d2 / (2.0 * sigma**2)) * (d2 <= (truncate * sigma) ** 2)
    wgt = wgt * ((pr >= 0) & (pr < h) & (pc >= 0) & (pc < w))
    wgt /= wgt.sum(axis=(1, 2), keepdims=True)
    inside = wgt > 0
    flat = np.bincount((pr * w + pc)[inside], weights=wgt[inside], minlength=h * w)
    return flat.reshape(shape).astype(np.float32)


def points_in_box(points: np.ndarray, top: int, left: int, height: int, width: int) -> np.ndarray:
    """Boolean mask of the points whose pixel lies in rows ``[top, top+height)``, cols ``[left, left+width)``."""
    x, y = np.floor(points[:, 0]), np.floor(points[:, 1])
    return (x >= left) & (x < left + width) & (y >= top) & (y < top + height)


def crop(image: np.ndarray, points: np.ndarray, top: int, left: int, height: int, width: int
         ) -> tuple[np.ndarray, np.ndarray]:
    """Crop ``image`` (``(H, W, ...)``) and keep the points inside, shifted into crop coordinates."""
    if top < 0 or left < 0 or top + height > image.shape[0] or left + width > image.shape[1]:
        raise ValueError(f"crop {height}x{width} at ({top}, {left}) exceeds image {image.shape[:2]}")
    keep = points_in_box(points, top, left, height, width)
    return image[top:top + height, left:left + width], points[keep] - np.array([left, top], dtype=points.dtype)


def center_box(shape: tuple[int, int], size: int) -> tuple[int, int, int, int]:
    """``(top, left, height, width)`` of the centred ``size x size`` box (whole axis if smaller)."""
    h, w = shape
    ch, cw = min(size, h), min(size, w)
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def rescale_points(points: np.ndarray, src_shape: tuple[int, int], dst_shape: tuple[int, int]) -> np.ndarray:
    """Map points from an image of ``src_shape=(H, W)`` onto a canvas of ``dst_shape``."""
    scale = np.array([dst_shape[1] / src_shape[1], dst_shape[0] / src_shape[0]])
    out = points * scale
    # Guard the open upper bound against float round-off.
    return np.minimum(out, np.array([dst_shape[1], dst_shape[0]]) - 1e-6)
