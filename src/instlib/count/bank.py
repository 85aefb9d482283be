"""Decoded images in memory: each image decoded once, all points of a set in one tensor.

Every image is decoded once into a ``uint8 (C, H, W)`` tensor (C = 1 or 3; grayscale is expanded
to RGB only when a crop is cut). Points of all images sit in one ``(P, 2)`` tensor with per-image
offsets, so the cell count of any batch of boxes, and their label maps, come from one vectorised
point-in-box test (:mod:`instlib.count.batches`) instead of per-crop connected components.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from instlib.data.cellsize import cell_diameter
from instlib.data.folder import Sample
from instlib.data.images import read_image, to_uint8
from instlib.data.points import read_points


@dataclass
class ImageBank:
    """Decoded images (and, when labelled, their points) of a list of samples."""

    names: list[str]
    paths: list[Path]
    images: list[torch.Tensor]  # uint8 (C, H, W)
    points: torch.Tensor | None  # float64 (P, 2) X, Y of all images; None when unlabelled
    offsets: torch.Tensor | None  # int64 (N + 1,): points of image i are points[offsets[i]:offsets[i+1]]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def labelled(self) -> bool:
        return self.points is not None

    @property
    def channels(self) -> tuple[int, ...]:
        """The distinct channel counts of the images (1 = grayscale, 3 = colour)."""
        return tuple(sorted({int(im.shape[0]) for im in self.images}))

    @property
    def shapes(self) -> torch.Tensor:
        """``(N, 2)`` int64 image heights and widths."""
        return torch.tensor([tuple(im.shape[1:]) for im in self.images], dtype=torch.int64).reshape(-1, 2)

    def counts(self) -> torch.Tensor:
        """``(N,)`` number of points per image."""
        return self.labels()[1].diff().double()

    def labels(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(points, offsets)``; raises for an unlabelled bank."""
        if self.points is None or self.offsets is None:
            # DACS relies on this: an unlabelled bank has no labels to leak.
            raise RuntimeError("this image bank was loaded without labels")
        return self.points, self.offsets

    def without_labels(self) -> ImageBank:
        """The same images with the labels dropped (what DACS sees of the target domain)."""
        return ImageBank(self.names, self.paths, self.images, None, None)

    def subset(self, idx: Sequence[int]) -> ImageBank:
        """A bank with the images ``idx`` (no decoding)."""
        idx = [int(i) for i in idx]
        points = offsets = None
        if self.labelled:
            pts, off = self.labels()
            parts = [pts[off[i]:off[i + 1]] for i in idx]
            points = torch.cat(parts) if parts else pts[:0]
            offsets = torch.tensor([0, *np.cumsum([len(p) for p in parts])], dtype=torch.int64)
        return ImageBank([self.names[i] for i in idx], [self.paths[i] for i in idx],
                         [self.images[i] for i in idx], points, offsets)


def load_bank(samples: Sequence[Sample], *, labelled: bool = True, progress: bool = False,
              desc: str = "decode") -> ImageBank:
    """Decode ``samples`` once into memory; ``labelled=False`` never opens their points files."""
    images, points = [], []
    for s in tqdm(samples, desc=desc, disable=not progress, leave=False):
        img = read_image(s.image)
        images.append(torch.from_numpy(np.ascontiguousarray(to_uint8(img).transpose(2, 0, 1))))
        if labelled:
            points.append(read_points(s.points, shape=img.shape[:2]))
    if not labelled:
        return ImageBank([s.name for s in samples], [s.image for s in samples], images, None, None)
    offsets = torch.tensor([0, *np.cumsum([len(p) for p in points])], dtype=torch.int64)
    pts = torch.from_numpy(np.concatenate(points)) if points else torch.zeros(0, 2, dtype=torch.float64)
    return ImageBank([s.name for s in samples], [s.image for s in samples], images, pts, offsets)


def concat_banks(banks: Sequence[ImageBank]) -> ImageBank:
    """One bank holding the images of all ``banks`` (all labelled or all unlabelled)."""
    labelled = {b.labelled for b in banks}
    if len(labelled) != 1:
        raise ValueError("cannot join labelled and unlabelled banks")
    points = offsets = None
    if labelled.pop():
        points = torch.cat([b.points for b in banks])
        sizes = torch.cat([b.offsets.diff() for b in banks])
        offsets = torch.cat([torch.zeros(1, dtype=torch.int64), sizes.cumsum(0)])
    return ImageBank([n for b in banks for n in b.names], [p for b in banks for p in b.paths],
                     [im for b in banks for im in b.images], points, offsets)


def scale_intensity(bank: ImageBank, percentile: float | None) -> ImageBank:
    """Per-image brightness normalisation: each image scaled so its ``percentile`` maps to 255 (clipped).

    Fluorescence images of one set differ several-fold in brightness (exposure, staining); this
    puts them on one scale before any statistics or crops. Choose the percentile above the
    background's share of the image (sparse nuclei cover a few per cent of it: 99.9 suits them).
    ``None`` returns the bank unchanged. Labels are untouched.
    """
    if percentile is None:
        return bank
    scaled = []
    for im in bank.images:
        level = float(np.percentile(im.numpy(), percentile))
        if level <= 0:  # a black image: nothing to scale
            scaled.append(im)
            continue
        scaled.append((im.float() * (255.0 / level)).round_().clamp_(0, 255).to(torch.uint8))
    return replace(bank, images=scaled)


MIN_STD = 1 / 255


def channel_stats(bank: ImageBank) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and std (on the ``[0, 1]`` scale) over every pixel of the bank, as RGB.

    Exact and cheap: from 256-bin histograms. A grayscale image counts for all three channels,
    as it will be repeated to RGB. The std is at least :data:`MIN_STD` (one grey level): a channel
    that is constant in the real images (red and green of blue-coded fluorescence) would otherwise
    scale any non-zero value of another domain's images by up to a million.
    """
    hist = torch.zeros(3, 256, dtype=torch.float64)
    for im in bank.images:
        h = torch.stack([torch.bincount(c.flatten(), minlength=256) for c in im]).double()
        hist += h if h.shape[0] == 3 else h.expand(3, -1)
    v = torch.arange(256, dtype=torch.float64) / 255.0
    n = hist.sum(1)
    mean = (hist * v).sum(1) / n
    std = ((hist * v**2).sum(1) / n - mean**2).clamp_min(0).sqrt().clamp_min(MIN_STD)
    return tuple(mean.tolist()), tuple(std.tolist())


def cell_sigma(bank: ImageBank, max_images: int = 50) -> float | None:
    """Std in pixels of Gaussian targets shaped like the bank's cells, or None when it has no cells.

    The blob scale of the cells at their points, ``diameter / (2 sqrt 2)`` (:mod:`instlib.data.cellsize`:
    where the normalised Laplacian of Gaussian of a disk peaks), median over at most ``max_images`` images.
    A target as wide as the cell lets a clump of touching cells be counted by its area; a narrower one
    asks for the centre of each, which a saturated clump does not show.
    """
    points, offsets = bank.labels()
    sizes = [_cell_diameter(image, points[offsets[i]:offsets[i + 1]])
             for i, image in enumerate(bank.images[:max_images]) if offsets[i + 1] > offsets[i]]
    return float(np.median(sizes)) / (2 * math.sqrt(2)) if sizes else None


# Measured diameters by image and points. A large image takes about a second, and a cross-validation
# measures the same real images for every source, mixing variant and seed of a fold: once is enough.
_DIAMETERS: dict[bytes, float] = {}


def _cell_diameter(image: torch.Tensor, points: torch.Tensor) -> float:
    key = hashlib.blake2b(image.numpy().tobytes() + points.numpy().tobytes(), digest_size=16).digest()
    if key not in _DIAMETERS:
        _DIAMETERS[key] = cell_diameter(image.permute(1, 2, 0).numpy(), points.numpy())
    return _DIAMETERS[key]
