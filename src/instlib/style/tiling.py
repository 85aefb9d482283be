"""Aspect-preserving tiling: the networks see ``resolution``-sized tiles of an image at its own pixel scale.

A diffusion model is trained at one resolution; squashing an 800 x 600 micrograph to 512 x 512 makes
round cells oval and changes their size, and the labels only come back by resampling. Instead the
image keeps its pixel grid: it is reflect-padded (never resized) to a size the model can tile, the
UNet runs on square latent tiles, and its noise predictions are merged into one latent per step, so
that the sampler moves a single consistent latent (MultiDiffusion, Bar-Tal et al., ICML 2023). The
result is cropped back to the original size: output pixel (y, x) is the restyled input pixel (y, x).

Content smaller than a tile is padded rather than resized up: resizing would change the cell size
the model and the style statistics see, and the padding is mirrored image, not a hard border the
model would restyle as an edge.

Layouts (:data:`TILINGS`):

- ``blend`` (default): tiles overlap by ``overlap`` of their width and are merged with linear ramps,
  so no seam is left where one tile's prediction ends.
- ``grid``: the reference's non-overlapping tiles (its later data are native 512 x 512 tiles of a
  larger canvas); the image is padded to a multiple of the tile, each tile is denoised on its own.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from instlib.errors import InstlibError


def _blend_positions(length: int, tile: int, overlap: float) -> tuple[int, list[int]]:
    """Padded length and tile starts: overlapping tiles, the last one flush with the end."""
    padded = max(length, tile)
    stride = max(1, tile - round(overlap * tile))
    n = math.ceil((padded - tile) / stride) + 1
    return padded, sorted({round(i * (padded - tile) / max(n - 1, 1)) for i in range(n)})


def _grid_positions(length: int, tile: int, overlap: float) -> tuple[int, list[int]]:
    """Padded length and tile starts: non-overlapping tiles (``overlap`` is ignored)."""
    padded = math.ceil(length / tile) * tile
    return padded, list(range(0, padded, tile))


#: Tile layouts by name: ``(length, tile, overlap) -> (padded length, tile starts)``, in latent cells.
TILINGS: dict[str, Callable[[int, int, float], tuple[int, list[int]]]] = {
    "blend": _blend_positions,
    "grid": _grid_positions,
}


def _ramp(tile: int, starts: list[int]) -> torch.Tensor:
    """Per-tile 1-D weights: linear ramps over the parts a tile shares with its neighbours, 1 elsewhere."""
    weights = torch.ones(len(starts), tile)
    for i, start in enumerate(starts):
        if i > 0:
            shared = starts[i - 1] + tile - start
            weights[i, :shared] = torch.arange(1, shared + 1) / (shared + 1)
        if i + 1 < len(starts):
            shared = start + tile - starts[i + 1]
            weights[i, tile - shared:] = torch.arange(shared, 0, -1) / (shared + 1)
    return weights


@dataclass(frozen=True)
class TilePlan:
    """Where the tiles of one latent lie. Sizes in latent cells; ``factor`` pixels per latent cell."""

    height: int
    width: int
    tile: int
    factor: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    row_weights: torch.Tensor
    col_weights: torch.Tensor

    @property
    def pixel_size(self) -> tuple[int, int]:
        """``(h, w)`` the image is padded to before encoding."""
        return self.height * self.factor, self.width * self.factor

    @property
    def count(self) -> int:
        return len(self.rows) * len(self.cols)


def plan_tiles(height: int, width: int, resolution: int, factor: int, tiling: str = "blend",
               overlap: float = 0.25) -> TilePlan:
    """Tiles of ``resolution`` pixels covering an ``height x width`` image whose latent has ``factor``
    pixels per cell; ``overlap`` is the share of a tile its neighbour covers in the ``blend`` layout."""
    tile = resolution // factor
    lat_h, lat_w = math.ceil(height / factor), math.ceil(width / factor)
    layout = TILINGS[tiling]
    (ph, rows), (pw, cols) = layout(lat_h, tile, overlap), layout(lat_w, tile, overlap)
    return TilePlan(ph, pw, tile, factor, tuple(rows), tuple(cols), _ramp(tile, rows), _ramp(tile, cols))


def pad_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``img (H, W, C)`` mirrored at its bottom and right edges up to ``size = (h, w)`` (no resampling)."""
    h, w = img.shape[:2]
    if (h, w) == tuple(size):
        return img
    return np.pad(img, ((0, size[0] - h), (0, size[1] - w), (0, 0)), mode="reflect" if min(h, w) > 1 else "edge")


def tiled(fn: Callable[[torch.Tensor, int], torch.Tensor], latents: torch.Tensor, plan: TilePlan,
          max_tiles: int = 16) -> torch.Tensor:
    """Apply ``fn`` to every tile of ``latents (B, C, H, W)`` and merge the results by weight (in fp32).

    ``fn(tiles, n)`` gets ``n`` tiles stacked tile-major, ``(n * B, C, t, t)`` (tile 0 of every image, then
    tile 1, ...), at most ``max_tiles`` per call so that a large image does not exhaust memory, and
    returns a tensor of the same shape.
    """
    t = plan.tile
    tiles = [latents[:, :, r:r + t, c:c + t] for r in plan.rows for c in plan.cols]
    out = [y for i in range(0, len(tiles), max_tiles)
           for y in fn(torch.cat(tiles[i:i + max_tiles]), len(tiles[i:i + max_tiles])).float().chunk(
               len(tiles[i:i + max_tiles]))]
    if len(tiles) == 1:
        return out[0]
    total = torch.zeros_like(latents, dtype=torch.float32)
    weight = torch.zeros((1, 1, *latents.shape[2:]), device=latents.device)
    k = 0
    for i, r in enumerate(plan.rows):
        for j, c in enumerate(plan.cols):
            w = (plan.row_weights[i][:, None] * plan.col_weights[j][None, :]).to(latents.device)
            total[:, :, r:r + t, c:c + t] += out[k] * w
            weight[:, :, r:r + t, c:c + t] += w
            k += 1
    return total / weight


def check_tile(resolution: int, factor: int) -> None:
    """Refuse a tile size the autoencoder cannot map to whole latent cells."""
    if resolution % factor:
        raise InstlibError(f"resolution {resolution} is not a multiple of the VAE's factor {factor}")
