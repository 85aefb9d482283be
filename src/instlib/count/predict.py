"""Counting whole images with a trained model: by tiling, and on the centre crop as the reference does.

Both heads count a whole image as the sum of its counts over a grid of ``crop x crop`` tiles
(:func:`tile_counts`, by head in :data:`TILE_COUNTS`):

- ``regression``: the model's count of each tile (zero-padded at the right and bottom edges),
  clipped at 0: a region cannot hold a negative number of cells.
- ``density``: the image's density map, from overlapping tiles blended with weights that sum to one
  at every pixel (so nothing is counted twice, and tile borders, where a cell is only partly seen,
  weigh least), summed over each tile. :func:`density_maps` returns the maps themselves.

The tile counts are also what training validates on (:func:`true_tile_counts` gives the truth).
:func:`image_tiles` and :func:`center_crops` cut the tiles and the reference's centre crops.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from instlib.count.bank import ImageBank, load_bank, scale_intensity
from instlib.count.batches import box_counts, crop_images
from instlib.count.model import CountModel, load_model
from instlib.count.runtime import as_input, autocast, pick_device
from instlib.count.spec import ModelSpec
from instlib.data.atomic import atomic_path
from instlib.data.folder import IMAGES, POINTS, Sample, list_samples
from instlib.data.images import is_image_file
from instlib.data.maps import center_box
from instlib.errors import DataError, InstlibError
from instlib.runs.folders import MODEL_FILE


def image_tiles(image: torch.Tensor, size: int) -> torch.Tensor:
    """``(T, 3, size, size)`` uint8 tiles covering a ``(C, H, W)`` image, zero-padded at the right and bottom."""
    c, h, w = image.shape
    ph, pw = math.ceil(h / size) * size, math.ceil(w / size) * size
    padded = torch.zeros(3, ph, pw, dtype=torch.uint8)
    padded[:, :h, :w] = image
    tiles = padded.unfold(1, size, size).unfold(2, size, size)  # (3, nh, nw, size, size)
    return tiles.permute(1, 2, 0, 3, 4).reshape(-1, 3, size, size)


def center_crops(bank: ImageBank, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(tops, lefts, crops)`` of the centred box of every image (the reference's evaluation)."""
    tl = torch.tensor([center_box(tuple(s), size)[:2] for s in bank.shapes.tolist()], dtype=torch.int64).reshape(-1, 2)
    idx = torch.arange(len(bank))
    return tl[:, 0], tl[:, 1], crop_images(bank, idx, tl[:, 0], tl[:, 1], size)


@torch.no_grad()
def _crop_counts(model: CountModel, chunks: Iterator[torch.Tensor], batch_size: int, device: torch.device, amp: bool,
                 channels_last: bool, progress) -> np.ndarray:
    """The model's count of every uint8 crop that ``chunks`` yield, in order, clipped at 0."""
    model.eval()
    counts = []
    for crops in chunks:
        for start in range(0, len(crops), batch_size):
            x = as_input(crops[start:start + batch_size].to(device).float().div_(255), channels_last)
            with autocast(device, amp):
                count, _ = model(x)
            counts.append(count.float().clamp_min(0).cpu().double())
            progress.update(len(x))
    return torch.cat(counts).numpy() if counts else np.zeros(0)


def _grid_shape(shape: Sequence[int], size: int) -> tuple[int, int]:
    """Rows and columns of ``size`` tiles covering an image of ``shape`` ``(H, W)``."""
    return -(-int(shape[0]) // size), -(-int(shape[1]) // size)


def _regression_tiles(model: CountModel, bank: ImageBank, batch_size: int, device: torch.device, amp: bool,
                      channels_last: bool, progress: bool) -> list[np.ndarray]:
    size = model.spec.crop_size
    grids = [_grid_shape(im.shape[1:], size) for im in bank.images]

    def chunks() -> Iterator[torch.Tensor]:  # tiles of several images per chunk: fewer, fuller batches
        tiles, n = [], 0
        for im in bank.images:
            tiles.append(image_tiles(im, size))
            n += len(tiles[-1])
            if n >= 4 * batch_size:
                yield torch.cat(tiles)
                tiles, n = [], 0
        if tiles:
            yield torch.cat(tiles)

    with tqdm(total=sum(r * c for r, c in grids), desc="count", unit="tile", disable=not progress,
              leave=False) as bar:
        counts = _crop_counts(model, chunks(), batch_size, device, amp, channels_last, bar)
    ends = np.cumsum([r * c for r, c in grids])
    return [part.reshape(grid) for part, grid in zip(np.split(counts, ends[:-1]), grids)]


def _density_tiles(model: CountModel, bank: ImageBank, batch_size: int, device: torch.device, amp: bool,
                   channels_last: bool, progress: bool) -> list[np.ndarray]:
    maps = density_maps(model, bank, batch_size=batch_size, device=device, amp=amp, channels_last=channels_last,
                        progress=progress)
    return [_grid_sums(m, model.spec.crop_size) for m in maps]


def _grid_sums(density: np.ndarray, size: int) -> np.ndarray:
    """Sums of an ``(H, W)`` map over the ``size x size`` tiles of a grid from the top left (float64)."""
    rows, cols = _grid_shape(density.shape, size)
    padded = np.zeros((rows * size, cols * size))
    padded[:density.shape[0], :density.shape[1]] = density
    return padded.reshape(rows, size, cols, size).sum(axis=(1, 3))


# How each head counts the tiles of a whole image, and how its whole-image count (their sum) reads in metrics.
TILE_COUNTS: dict[str, tuple[Callable[..., list[np.ndarray]], str]] = {
    "regression": (_regression_tiles, "sum of the counts of {s}x{s} tiles"),
    "density": (_density_tiles, "sum of the density map from overlapping {s}x{s} tiles, blended"),
}


def whole_image_evaluation(spec: ModelSpec) -> str:
    """How a model of ``spec`` counts whole images, in words."""
    return "whole images: " + TILE_COUNTS[spec.head][1].format(s=spec.crop_size)


def tile_counts(model: CountModel, bank: ImageBank, *, batch_size: int = 32, device: torch.device | None = None,
                amp: bool = True, channels_last: bool = True, progress: bool = False) -> list[np.ndarray]:
    """Per image, the model's counts of the ``crop x crop`` tiles of a grid from the top left, ``(rows, cols)``.

    A regression model counts each tile (zero-padded at the right and bottom, clipped at 0); a
    density model's blended map is summed over each tile. An image's count is the sum of its grid.
    """
    device = device or next(model.parameters()).device
    return TILE_COUNTS[model.spec.head][0](model, bank, batch_size, device, amp, channels_last, progress)


def true_tile_counts(bank: ImageBank, size: int) -> list[np.ndarray]:
    """Per image, the number of points in each ``size x size`` tile of the grid :func:`tile_counts` uses."""
    out = []
    for i, shape in enumerate(bank.shapes.tolist()):
        rows, cols = _grid_shape(shape, size)
        tops = torch.arange(rows).repeat_interleave(cols) * size
        lefts = torch.arange(cols).repeat(rows) * size
        idx = torch.full((rows * cols,), i, dtype=torch.int64)
        out.append(box_counts(bank, idx, tops, lefts, size).double().numpy().reshape(rows, cols))
    return out


def count_bank(model: CountModel, bank: ImageBank, *, batch_size: int = 32, device: torch.device | None = None,
               amp: bool = True, channels_last: bool = True, progress: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
    """``(whole-image counts, centre-crop counts)`` for every image of ``bank``."""
    device = device or next(model.parameters()).device
    grids = tile_counts(model, bank, batch_size=batch_size, device=device, amp=amp, channels_last=channels_last,
                        progress=progress)
    whole = np.array([g.sum() for g in grids], dtype=np.float64)
    return whole, center_counts(model, bank, batch_size=batch_size, device=device, amp=amp,
                                channels_last=channels_last, progress=progress)


def center_counts(model: CountModel, bank: ImageBank, *, batch_size: int = 32, device: torch.device | None = None,
                  amp: bool = True, channels_last: bool = True, progress: bool = False) -> np.ndarray:
    """The model's count of the centred ``crop x crop`` box of every image (the reference's evaluation)."""
    device = device or next(model.parameters()).device
    _, _, centre = center_crops(bank, model.spec.crop_size)
    with tqdm(total=len(bank), desc="centre crops", unit="crop", disable=not progress, leave=False) as bar:
        return _crop_counts(model, iter([centre]), batch_size, device, amp, channels_last, bar)


def tile_starts(length: int, size: int, overlap: int) -> list[int]:
    """Starts of ``size`` windows covering ``[0, length)`` with at least ``overlap`` pixels shared by neighbours."""
    if length <= size:
        return [0]
    step = size - overlap
    n = math.ceil((length - size) / step) + 1
    # Spread evenly, so the last window ends exactly at the border.
    return [round(i * (length - size) / (n - 1)) for i in range(n)]


def blend_window(size: int, overlap: int) -> torch.Tensor:
    """``(size, size)`` weights rising linearly over ``overlap`` pixels from each edge; positive everywhere."""
    ramp = max(overlap, 1)
    r = torch.arange(size, dtype=torch.float64)
    edge = torch.minimum(r + 1, size - r).clamp(max=ramp) / ramp
    return edge[:, None] * edge[None, :]


@torch.no_grad()
def density_maps(model: CountModel, bank: ImageBank, *, overlap: int | None = None, batch_size: int = 32,
                 device: torch.device | None = None, amp: bool = True, channels_last: bool = True,
                 progress: bool = False) -> list[np.ndarray]:
    """``(H, W)`` float32 density map of every image of ``bank``; each sums to the image's predicted count.

    Tiles of the model's crop size overlap by ``overlap`` pixels (default: a quarter of a tile);
    every pixel's density is the weighted mean of the tiles that cover it, with weights from
    :func:`blend_window`, so the blended map is a partition of unity over tiles and counts nothing twice.
    """
    device = device or next(model.parameters()).device
    size = model.spec.crop_size
    overlap = size // 4 if overlap is None else overlap
    window = blend_window(size, overlap)
    model.eval()
    out = []
    for im in tqdm(bank.images, desc="density maps", unit="image", disable=not progress, leave=False):
        h, w = im.shape[1:]
        starts = [(t, l) for t in tile_starts(h, size, overlap) for l in tile_starts(w, size, overlap)]
        tops, lefts = (torch.tensor(v, dtype=torch.int64) for v in zip(*starts))
        single = ImageBank([""], [Path()], [im], None, None)
        tiles = crop_images(single, torch.zeros(len(starts), dtype=torch.int64), tops, lefts, size)
        acc = torch.zeros(max(h, size), max(w, size), dtype=torch.float64)
        weight = torch.zeros_like(acc)
        for b in range(0, len(tiles), batch_size):
            x = as_input(tiles[b:b + batch_size].to(device).float().div_(255), channels_last)
            with autocast(device, amp):
                maps = model.density_map(x)[:, 0].double().cpu()
            for m, t, l in zip(maps, tops[b:b + batch_size].tolist(), lefts[b:b + batch_size].tolist()):
                acc[t:t + size, l:l + size] += m * window
                weight[t:t + size, l:l + size] += window
        # Density predicted on the zero padding of an image smaller than a tile lies outside it: dropped.
        out.append((acc / weight)[:h, :w].float().numpy())
    return out


def true_counts(bank: ImageBank, size: int) -> tuple[np.ndarray, np.ndarray]:
    """``(whole-image counts, counts inside the centre box)`` from the points."""
    tops, lefts, _ = center_crops(bank, size)
    return bank.counts().numpy(), box_counts(bank, torch.arange(len(bank)), tops, lefts, size).double().numpy()


def check_channels(bank: ImageBank, channels: Sequence[int], trained_on: str) -> None:
    """Raise :class:`DataError` naming the first image whose channel count is not in ``channels``."""
    for path, im in zip(bank.paths, bank.images):
        if int(im.shape[0]) not in channels:
            raise DataError(f"has {im.shape[0]} channel(s), but {trained_on} {'/'.join(map(str, channels))}-channel "
                            "images; convert the images or train a model on images like these", path)


def model_path(run: str | Path) -> Path:
    """``run`` itself if it is a model file, else ``run/model.safetensors``."""
    run = Path(run)
    path = run / MODEL_FILE if run.is_dir() else run
    if not path.is_file():
        raise InstlibError(f"has no {MODEL_FILE}; pass a finished 'instlib count train' run folder or a model file",
                           run)
    return path


def folder_samples(data_dir: Path) -> tuple[list[Sample], bool]:
    """Samples of a folder and whether it is labelled (points are optional when predicting)."""
    if (data_dir / POINTS).is_dir():
        return list_samples(data_dir), True
    if not (data_dir / IMAGES).is_dir():
        raise DataError(f"has no '{IMAGES}/' subfolder", data_dir)
    images = sorted(p for p in (data_dir / IMAGES).iterdir() if is_image_file(p))
    if not images:
        raise DataError(f"has no images in {IMAGES}/", data_dir)
    return [Sample(p.stem, p, data_dir / POINTS / f"{p.stem}.csv") for p in images], False


def predict(run_dir: str | Path, data_dir: str | Path, *, device: str | None = None, batch_size: int = 32,
            maps_dir: str | Path | None = None, progress: bool = False) -> pd.DataFrame:
    """Count every image of ``data_dir`` with the model of ``run_dir`` (a run folder or a model file).

    Returns one row per image: ``name, pred, pred_center`` and, when the folder has points,
    ``true, true_center``. With ``maps_dir`` (density models only) each image's density map is
    also written there as ``<name>.tiff`` (float32, sum = ``pred``).
    """
    dev = pick_device(device)
    path = model_path(run_dir)
    model = load_model(path, device=dev)
    if maps_dir is not None and model.spec.head != "density":
        raise InstlibError(f"holds a '{model.spec.head}' model, which makes no density maps; train one with "
                           "--head density", path)
    samples, labelled = folder_samples(Path(data_dir))
    bank = load_bank(samples, labelled=labelled, progress=progress)
    check_channels(bank, model.spec.channels, f"the model {path} was trained on")
    bank = scale_intensity(bank, model.spec.intensity_percentile)
    model = model.to(memory_format=torch.channels_last)
    if maps_dir is None:
        pred, pred_center = count_bank(model, bank, batch_size=batch_size, device=dev, progress=progress)
    else:
        maps = density_maps(model, bank, batch_size=batch_size, device=dev, progress=progress)
        for name, m in zip(bank.names, maps):
            write_map(Path(maps_dir) / f"{name}.tiff", m)
        pred = np.array([m.sum(dtype=np.float64) for m in maps])
        pred_center = center_counts(model, bank, batch_size=batch_size, device=dev)
    df = pd.DataFrame({"name": bank.names, "pred": pred, "pred_center": pred_center})
    if labelled:
        df["true"], df["true_center"] = true_counts(bank, model.spec.crop_size)
    return df


def write_map(path: Path, density: np.ndarray) -> None:
    """Write one density map as a float32 TIFF, atomically."""
    import tifffile

    with atomic_path(path) as tmp:
        tifffile.imwrite(tmp, density.astype(np.float32), photometric="minisblack")
