"""Mixing a target-domain batch with a source-domain batch: the authors' CutMix and DACS proper.

In a mixing stage every step draws a *source* batch (the stage's training data, e.g. synthetic)
and a *target* batch (``mix_with``, e.g. real). Per sample, with probability ``prob``, a rectangle
covering half the crop is cut from the source crop and pasted onto the target crop; samples
without a rectangle stay pure target.

- ``cutmix`` (the authors' supervised variant): both batches are labelled; the mixed label map is
  ``M * source_map + (1 - M) * target_map`` and its sum is the mixed crop's count. The maps are
  dot maps for the regression head and Gaussian density maps for the density head: either way the
  same mask mixes them, so the sums of the two parts are conserved.
- ``dacs`` (Tranheden et al., WACV 2021): the target batch is *unlabelled*. Its part of the mixed
  crop is labelled with the model's own density prediction on the target crop (pseudo-labels:
  the density head's map, or the regression head's 1x1 helper), and the source batch also trains
  supervised. Target labels are never loaded.

Strategies are registered by name in :data:`MIXES`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from instlib.count.model import CountModel
from instlib.count.batches import Batch
from instlib.errors import InstlibError


def half_area_masks(n: int, size: int, gen: torch.Generator, prob: float, device="cpu") -> torch.Tensor:
    """``(n, 1, size, size)`` masks; with probability ``prob`` a rectangle of half the area is 1.

    Width ~ U{size/2 + 1, ..., size - 1}, height = round(area / width), uniform position (the
    authors' ``np.random.randint(W // 2 + 1, W)``), so the rectangle covers half the crop up to
    the rounding of its height and never spans the whole width.
    """
    half = size * size / 2
    width = torch.randint(size // 2 + 1, size, (n,), generator=gen)
    height = torch.round(half / width).long().clamp(1, size)
    top = (torch.rand(n, generator=gen) * (size - height + 1)).long()
    left = (torch.rand(n, generator=gen) * (size - width + 1)).long()
    on = torch.rand(n, generator=gen) < prob
    r = torch.arange(size)
    rows = (r >= top[:, None]) & (r < (top + height)[:, None])  # (n, size)
    cols = (r >= left[:, None]) & (r < (left + width)[:, None])
    masks = (rows[:, :, None] & cols[:, None, :] & on[:, None, None]).float()
    return masks[:, None].to(device)


def paste(target: torch.Tensor, source: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``mask * source + (1 - mask) * target``."""
    return torch.lerp(target, source, mask)


def cutmix(target: Batch, source: Batch, mask: torch.Tensor) -> Batch:
    """Supervised CutMix: images and label maps mixed with the same mask; counts follow from the map."""
    if target.maps is None or source.maps is None:
        raise ValueError("cutmix needs labelled source and target batches (use dacs for unlabelled targets)")
    return Batch(paste(target.images, source.images, mask), paste(target.maps, source.maps, mask))


def dacs_mix(target_images: torch.Tensor, source: Batch, mask: torch.Tensor, pseudo_maps: torch.Tensor) -> Batch:
    """DACS: the target part of the mixed crop is labelled by ``pseudo_maps`` (the model's density)."""
    return Batch(paste(target_images, source.images, mask), paste(pseudo_maps, source.maps, mask))


@torch.no_grad()
def pseudo_label(model: CountModel, images: torch.Tensor) -> torch.Tensor:
    """The model's density on ``images`` as pixel maps; a fixed target, so no gradient, eval-mode norms."""
    was_training = model.training
    model.eval()
    try:
        return model.density_map(images).float()
    finally:
        model.train(was_training)


@dataclass(frozen=True)
class NoMix:
    """Plain supervised training on the source batch."""

    name: str = "none"
    needs_target: bool = False
    target_labelled: bool = False
    needs_density: bool = False
    default_prob: float = 0.0

    def loss(self, model: CountModel, source: Batch, target: Batch | None, gen: torch.Generator,
             prob: float) -> torch.Tensor:
        return model.loss(source.images, source.maps)


@dataclass(frozen=True)
class CutMix(NoMix):
    """The authors' CutMix: a labelled target batch with half-area rectangles from the source."""

    name: str = "cutmix"
    needs_target: bool = True
    target_labelled: bool = True
    default_prob: float = 0.5

    def loss(self, model, source, target, gen, prob):
        mask = half_area_masks(len(target.images), target.images.shape[-1], gen, prob, target.images.device)
        mixed = cutmix(target, source, mask)
        return model.loss(mixed.images, mixed.maps)


@dataclass(frozen=True)
class DACS(NoMix):
    """DACS: supervised loss on the source batch plus a pseudo-labelled loss on the mixed batch."""

    name: str = "dacs"
    needs_target: bool = True
    target_labelled: bool = False
    needs_density: bool = True
    default_prob: float = 1.0  # Tranheden et al. mix every target image

    def loss(self, model, source, target, gen, prob):
        mask = half_area_masks(len(target.images), target.images.shape[-1], gen, prob, target.images.device)
        mixed = dacs_mix(target.images, source, mask, pseudo_label(model, target.images))
        return model.loss(source.images, source.maps) + model.loss(mixed.images, mixed.maps)


MIXES: dict[str, NoMix] = {m.name: m for m in (NoMix(), CutMix(), DACS())}


def get_mix(name: str) -> NoMix:
    """The mixing strategy registered as ``name``."""
    if name not in MIXES:
        raise InstlibError(f"unknown mixing strategy '{name}'; choose one of {', '.join(MIXES)}")
    return MIXES[name]
