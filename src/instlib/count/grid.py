"""Pixel maps and coarse density grids: sum-preserving pooling and its inverse.

A density model predicts on a grid coarser than the image (its output stride). Label maps are
summed into grid cells that partition the image exactly, and predictions are spread back evenly
over each cell's pixels, so counts (sums) never change between the two.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _cells(size: int, cells: int, device) -> torch.Tensor:
    """Cell index of each pixel along one axis: pixel ``p`` of ``size`` belongs to cell ``p * cells // size``."""
    return torch.arange(size, device=device) * cells // size


def pool_to_grid(maps: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Sum ``(B, 1, H, W)`` pixel maps into ``(B, 1, h, w)`` cells that partition the image exactly.

    (Adaptive average pooling would let neighbouring cells share pixels and break the sums.)
    """
    (h, w), (H, W) = grid, maps.shape[-2:]
    rows = F.one_hot(_cells(H, h, maps.device), h).to(maps.dtype)  # (H, h)
    cols = F.one_hot(_cells(W, w, maps.device), w).to(maps.dtype)  # (W, w)
    return rows.T @ maps @ cols


def grid_to_pixels(cells: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Spread each cell's value evenly over its pixels: the inverse of :func:`pool_to_grid` for sums."""
    (h, w), (H, W) = cells.shape[-2:], size
    r, c = _cells(H, h, cells.device), _cells(W, w, cells.device)
    area = torch.bincount(r, minlength=h)[:, None] * torch.bincount(c, minlength=w)[None, :]
    return (cells / area.to(cells.dtype))[..., r[:, None], c[None, :]]
