"""Counting whole images with a trained model: by tiling, and on the centre crop as the reference does.

The whole-image count is the sum of the model's counts over ``crop x crop`` tiles that cover the
image (zero-padded at the right and bottom edges). Each tile's count is clipped at 0: a region
cannot hold a negative number of cells.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from instlib.count.model import CountModel, load_model
from instlib.count.pipeline import ImageBank, box_counts, center_crops, image_tiles, load_bank
from instlib.count.runtime import as_input, autocast, pick_device
from instlib.data.folder import IMAGES, POINTS, Sample, list_samples
from instlib.data.images import is_image_file
from instlib.errors import DataError, InstlibError

MODEL_FILE = "model.safetensors"


@torch.no_grad()
def _count_crops(model: CountModel, chunks: Iterator[tuple[torch.Tensor, torch.Tensor]], n_images: int,
                 batch_size: int, device: torch.device, amp: bool, channels_last: bool, progress) -> np.ndarray:
    """Sum the model's clipped counts of uint8 crops into their images; ``chunks`` yields (crops, owners)."""
    model.eval()
    totals = torch.zeros(n_images, dtype=torch.float64)
    for crops, owners in chunks:
        for start in range(0, len(crops), batch_size):
            x = as_input(crops[start:start + batch_size].to(device).float().div_(255), channels_last)
            with autocast(device, amp):
                count, _ = model(x)
            totals.index_add_(0, owners[start:start + batch_size], count.float().clamp_min(0).cpu().double())
            progress.update(len(x))
    return totals.numpy()


def _tile_chunks(bank: ImageBank, size: int, per_chunk: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    # Tiles of several images go through the model together: fewer, fuller batches.
    tiles, owners, n = [], [], 0
    for i, im in enumerate(bank.images):
        t = image_tiles(im, size)
        tiles.append(t)
        owners.append(torch.full((len(t),), i, dtype=torch.int64))
        n += len(t)
        if n >= per_chunk:
            yield torch.cat(tiles), torch.cat(owners)
            tiles, owners, n = [], [], 0
    if tiles:
        yield torch.cat(tiles), torch.cat(owners)


def count_bank(model: CountModel, bank: ImageBank, *, batch_size: int = 32, device: torch.device | None = None,
               amp: bool = True, channels_last: bool = True, progress: bool = False
               ) -> tuple[np.ndarray, np.ndarray]:
    """``(whole-image counts by tiling, centre-crop counts)`` for every image of ``bank``."""
    device = device or next(model.parameters()).device
    size = model.spec.crop_size
    n_tiles = sum(_n_tiles(tuple(im.shape[1:]), size) for im in bank.images)
    with tqdm(total=n_tiles + len(bank), desc="count", unit="crop", disable=not progress, leave=False) as bar:
        whole = _count_crops(model, _tile_chunks(bank, size, 4 * batch_size), len(bank), batch_size, device,
                             amp, channels_last, bar)
        _, _, centre = center_crops(bank, size)
        center = _count_crops(model, iter([(centre, torch.arange(len(bank)))]), len(bank), batch_size, device,
                              amp, channels_last, bar)
    return whole, center


def _n_tiles(shape: tuple[int, int], size: int) -> int:
    return -(-shape[0] // size) * -(-shape[1] // size)


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
            progress: bool = False) -> pd.DataFrame:
    """Count every image of ``data_dir`` with the model of ``run_dir`` (a run folder or a model file).

    Returns one row per image: ``name, pred, pred_center`` and, when the folder has points,
    ``true, true_center``.
    """
    dev = pick_device(device)
    path = model_path(run_dir)
    model = load_model(path, device=dev)
    samples, labelled = folder_samples(Path(data_dir))
    bank = load_bank(samples, labelled=labelled, progress=progress)
    check_channels(bank, model.spec.channels, f"the model {path} was trained on")
    model = model.to(memory_format=torch.channels_last)
    pred, pred_center = count_bank(model, bank, batch_size=batch_size, device=dev, progress=progress)
    df = pd.DataFrame({"name": bank.names, "pred": pred, "pred_center": pred_center})
    if labelled:
        df["true"], df["true_center"] = true_counts(bank, model.spec.crop_size)
    return df
