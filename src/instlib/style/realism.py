"""Realism as a number: a two-sample test by a small CNN that tells real crops from fake ones.

For each fake folder, a small CNN is trained from scratch on random crops to separate real from fake and
scored on the crops of held-out images, k-fold cross-validated with folds split by IMAGE (crops of one
image never sit on both sides). Accuracy 0.5: the classifier cannot tell them apart; 1.0: trivially
separable. The folds are balanced by taking the same number of images from each side.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from instlib.data.atomic import atomic_open
from instlib.data.selection import ImageFilter
from instlib.errors import DataError
from instlib.style.imaging import list_images, load_rgb


def _classifier() -> nn.Module:
    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))
    return nn.Sequential(block(3, 16), block(16, 32), block(32, 32), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 1))


def _crops(images: list[np.ndarray], n: int, size: int, rng: np.random.Generator) -> torch.Tensor:
    out = []
    for img in images:
        for _ in range(n):
            top, left = rng.integers(img.shape[0] - size + 1), rng.integers(img.shape[1] - size + 1)
            out.append(img[top:top + size, left:left + size])
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 255.0


def _load(folder: Path, crop: int, select: ImageFilter | None = None) -> list[np.ndarray]:
    files = list_images(folder)
    if select is not None:
        files = {n: files[n] for n in select.select(folder, list(files))}
    images = [load_rgb(p) for p in files.values()]
    if len(images) < 2:
        raise DataError("needs at least 2 images for a cross-validated realism score", folder)
    small = [i for i, im in enumerate(images) if min(im.shape[:2]) < crop]
    if small:
        raise DataError(f"has images smaller than the crop size {crop}", folder)
    return images


def _pick(images: list[np.ndarray], order: np.ndarray, mask: np.ndarray) -> list[np.ndarray]:
    return [images[i] for i in order[mask]]


def _fold_accuracy(real_train, fake_train, real_test, fake_test, crop, crops_per_image, steps, seed) -> float:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = _classifier()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    for _ in range(steps):
        x = torch.cat([_crops(real_train, 1, crop, rng), _crops(fake_train, 1, crop, rng)])
        y = torch.cat([torch.ones(len(real_train)), torch.zeros(len(fake_train))])
        loss = F.binary_cross_entropy_with_logits(net(x)[:, 0], y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        real = net(_crops(real_test, crops_per_image, crop, rng))[:, 0] > 0
        fake = net(_crops(fake_test, crops_per_image, crop, rng))[:, 0] <= 0
    return float(torch.cat([real, fake]).float().mean())


def realism(real_dir: str | Path, fake_dirs: list[str | Path] | str | Path, *, folds: int = 5, crop: int = 64,
            steps: int = 200, crops_per_image: int = 8, seed: int = 0, repeats: int = 1,
            select: ImageFilter | None = None, out: str | Path | None = None, progress: bool = True) -> pd.DataFrame:
    """Real-vs-fake accuracy per fake folder: columns ``fake, accuracy, std, folds, repeats, images``.

    ``folds``-fold cross-validation split by image; ``steps`` Adam steps per fold on batches of one random
    crop per training image and side; the test accuracy is over ``crops_per_image`` crops of each held-out
    image. ``repeats``: the cross-validation run again on new folds with new classifiers (repeat ``r`` is the
    run of seed ``seed + r * folds``); ``accuracy`` is the mean over all repeats and folds, ``std`` their spread.
    A classifier trained from scratch on a few dozen images scatters by about 0.1 from seed to seed, so
    comparisons of two sets of images want several repeats. ``select``: the real images to compare against
    (e.g. the stain the fakes were styled after). Writes the table to ``out`` (CSV) when given.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, got {repeats}")
    fake_dirs = [fake_dirs] if isinstance(fake_dirs, (str, Path)) else list(fake_dirs)
    real = _load(Path(real_dir), crop, select)
    rows = []
    for fake_dir in fake_dirs:
        fake = _load(Path(fake_dir), crop)
        n = min(len(real), len(fake))
        k = min(folds, n)
        accs = []
        for r, f in tqdm([(r, f) for r in range(repeats) for f in range(k)], desc=f"realism {Path(fake_dir).name}",
                         disable=not progress):
            run_seed = seed + r * folds
            rng = np.random.default_rng(run_seed)
            real_idx, fake_idx = rng.permutation(len(real))[:n], rng.permutation(len(fake))[:n]
            test = np.arange(n) % k == f
            accs.append(_fold_accuracy(_pick(real, real_idx, ~test), _pick(fake, fake_idx, ~test),
                                        _pick(real, real_idx, test), _pick(fake, fake_idx, test),
                                        crop, crops_per_image, steps, run_seed + f))
        rows.append({"fake": str(fake_dir), "accuracy": float(np.mean(accs)), "std": float(np.std(accs)),
                     "folds": k, "repeats": repeats, "images": n})
    table = pd.DataFrame(rows)
    if out is not None:
        with atomic_open(out, "w", newline="") as fh:
            table.to_csv(fh, index=False)
    return table
