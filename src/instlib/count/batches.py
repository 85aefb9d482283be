"""Batches of labelled training crops: boxes, their counts and label maps, cut and augmented in one go.

Boxes are ``size x size`` at ``(top, left)``; an image smaller than the box is padded with zeros
(black background) to the right and bottom, so every crop has the same shape. The count of every
box, and its dot or Gaussian label map, come from one vectorised point-in-box test over the bank's
points. Augmentation (:mod:`instlib.count.augment`) runs on the batch's tensors, on the GPU when
there is one, with the random draws per batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from instlib.count.augment import Intensity, Jitter, color_jitter, flip_rotate, intensity_augment
from instlib.count.bank import ImageBank
from instlib.data.maps import density_map


def random_boxes(bank: ImageBank, idx: torch.Tensor, size: int, gen: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Uniform ``(tops, lefts)`` of ``size x size`` boxes inside images ``idx`` (0 where an image is smaller)."""
    room = (bank.shapes[idx] - size).clamp_min(0) + 1
    u = torch.rand(len(idx), 2, generator=gen, dtype=torch.float64)
    pos = (u * room).long()
    return pos[:, 0], pos[:, 1]


def _box_points(bank: ImageBank, idx: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, size: int
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(owner, row, col, xy)`` of every point inside the boxes: box number, pixel and ``(X, Y)`` within the box."""
    points, offsets = bank.labels()
    start, n = offsets[idx], offsets[idx + 1] - offsets[idx]
    owner = torch.repeat_interleave(torch.arange(len(idx)), n)
    first = torch.cumsum(n, 0) - n
    pos = start[owner] + torch.arange(int(n.sum())) - first[owner]
    xy = points[pos] - torch.stack([lefts[owner], tops[owner]], dim=1).double()
    # A point belongs to pixel (floor(Y), floor(X)), as in instlib.data.maps.
    row, col = torch.floor(xy[:, 1]).long(), torch.floor(xy[:, 0]).long()
    inside = (row >= 0) & (row < size) & (col >= 0) & (col < size)
    return owner[inside], row[inside], col[inside], xy[inside]


def _points_in_boxes(bank: ImageBank, idx: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, size: int
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(owner, row, col)`` of every point inside the boxes: box number and pixel within the box."""
    return _box_points(bank, idx, tops, lefts, size)[:3]


def box_counts(bank: ImageBank, idx: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, size: int
               ) -> torch.Tensor:
    """``(K,)`` number of points inside each box."""
    owner, _, _ = _points_in_boxes(bank, idx, tops, lefts, size)
    return torch.bincount(owner, minlength=len(idx)).float()


def dot_maps(bank: ImageBank, idx: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, size: int
             ) -> torch.Tensor:
    """``(K, 1, size, size)`` float32 maps with the number of points in each pixel of each box."""
    owner, row, col = _points_in_boxes(bank, idx, tops, lefts, size)
    maps = torch.zeros(len(idx), 1, size, size)
    maps.index_put_((owner, torch.zeros_like(owner), row, col), torch.ones(len(owner)), accumulate=True)
    return maps


def density_targets(bank: ImageBank, idx: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, size: int,
                 sigma: float) -> torch.Tensor:
    """``(K, 1, size, size)`` float32 Gaussian density maps of the points in each box (sum = the box's count).

    Each box's map comes from :func:`instlib.data.maps.density_map` on the box alone: the Gaussian of a
    cell near the box's edge is renormalised onto the pixels inside, so a cell counts as one in
    exactly the box that holds its point, as in :func:`box_counts`.
    """
    owner, _, _, xy = _box_points(bank, idx, tops, lefts, size)
    maps = torch.zeros(len(idx), 1, size, size)
    for k in torch.unique(owner).tolist():
        maps[k, 0] = torch.from_numpy(density_map(xy[owner == k].numpy(), (size, size), sigma))
    return maps


def crop_images(bank: ImageBank, idx: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, size: int
                ) -> torch.Tensor:
    """``(K, 3, size, size)`` uint8 crops (grayscale repeated to RGB, zero padding past the border)."""
    out = torch.zeros(len(idx), 3, size, size, dtype=torch.uint8)
    for k, (i, t, l) in enumerate(zip(idx.tolist(), tops.tolist(), lefts.tolist())):
        im = bank.images[i][:, t:t + size, l:l + size]  # a view; the copy below is the only work
        out[k, :, :im.shape[1], :im.shape[2]] = im
    return out


def sample_boxes(bank: ImageBank, idx: torch.Tensor, size: int, gen: torch.Generator, *,
                 zero_keep: float = 1.0, point_crops: float = 0.0, tries: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Random boxes for images ``idx``, with empty boxes kept only with probability ``zero_keep``.

    Each image gets ``tries`` candidate boxes; the first one that holds a cell (or wins the
    ``zero_keep`` draw) is taken, the last candidate always, so an image without cells still
    gives a box. Unlabelled banks (and ``zero_keep >= 1``) take plain random boxes: deciding on
    emptiness would need the labels. With ``point_crops``, that share of the boxes is instead centred
    (up to a random shift of a quarter box) on a random annotated cell of its image, so that the dense
    clumps, where a few cells hold most of an image's count, are seen as often as their share of the cells.
    """
    if not bank.labelled or zero_keep >= 1.0:
        tops, lefts = random_boxes(bank, idx, size, gen)
    else:
        tops, lefts = _sparse_aware_boxes(bank, idx, size, gen, zero_keep, tries)
    if bank.labelled and point_crops > 0:
        tops, lefts = _centre_on_cells(bank, idx, size, gen, point_crops, tops, lefts)
    return tops, lefts


def _centre_on_cells(bank: ImageBank, idx: torch.Tensor, size: int, gen: torch.Generator, share: float,
                     tops: torch.Tensor, lefts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(tops, lefts)`` with a ``share`` of the boxes moved onto a random cell of their image (if it has one)."""
    points, offsets = bank.labels()
    n = offsets[idx + 1] - offsets[idx]
    chosen = (torch.rand(len(idx), generator=gen) < share) & (n > 0)
    if not chosen.any():
        return tops, lefts
    cell = (torch.rand(len(idx), generator=gen) * n).long().minimum((n - 1).clamp_min(0))  # one cell of each image
    shift = (torch.rand(int(chosen.sum()), 2, generator=gen, dtype=torch.float64) - 0.5) * (size / 2)
    centre = points[(offsets[idx] + cell)[chosen]] + shift  # (X, Y)
    room = (bank.shapes[idx[chosen]] - size).clamp_min(0)  # the largest top and left that keep a box inside
    tops, lefts = tops.clone(), lefts.clone()
    tops[chosen] = (centre[:, 1] - size / 2).round().long().clamp_min(0).minimum(room[:, 0])
    lefts[chosen] = (centre[:, 0] - size / 2).round().long().clamp_min(0).minimum(room[:, 1])
    return tops, lefts


def _sparse_aware_boxes(bank: ImageBank, idx: torch.Tensor, size: int, gen: torch.Generator, zero_keep: float,
                        tries: int) -> tuple[torch.Tensor, torch.Tensor]:
    cand = idx.repeat_interleave(tries)
    tops, lefts = random_boxes(bank, cand, size, gen)
    counts = box_counts(bank, cand, tops, lefts, size).view(-1, tries)
    ok = (counts > 0) | (torch.rand(counts.shape, generator=gen) < zero_keep)
    ok[:, -1] = True
    pick = torch.arange(len(idx)) * tries + ok.int().argmax(1)  # argmax finds the first accepted try
    return tops[pick], lefts[pick]


def steps_per_epoch(n_images: int, batch_size: int, crops_per_image: int = 1) -> int:
    """Batches needed for ``crops_per_image`` crops of every image."""
    return max(1, math.ceil(n_images * crops_per_image / batch_size))


def epoch_indices(n_images: int, batch_size: int, gen: torch.Generator, *, crops_per_image: int = 1,
                  steps: int | None = None) -> list[torch.Tensor]:
    """Image indices for one epoch, in full batches: shuffled passes over the images, ``crops_per_image`` each.

    The last batch is topped up from a further shuffled pass, so batch-norm never sees a batch of one.
    ``steps`` fixes the number of batches instead (cap or stretch).
    """
    if steps is None:
        steps = steps_per_epoch(n_images, batch_size, crops_per_image)
    passes = math.ceil(steps * batch_size / n_images)
    order = torch.cat([torch.randperm(n_images, generator=gen) for _ in range(passes)])
    return list(order[:steps * batch_size].view(steps, batch_size))


@dataclass
class Batch:
    """Augmented crops on the training device, with label maps that sum to their counts."""

    images: torch.Tensor  # float32 (B, 3, S, S) in [0, 1]
    maps: torch.Tensor | None  # float32 (B, 1, S, S); None for unlabelled images

    @property
    def counts(self) -> torch.Tensor:
        """``(B,)`` cell counts: the sums of the label maps."""
        if self.maps is None:
            raise RuntimeError("unlabelled batch")
        return self.maps.sum(dim=(1, 2, 3))


def make_batch(bank: ImageBank, idx: torch.Tensor, size: int, gen: torch.Generator, *,
               device: torch.device | str = "cpu", zero_keep: float = 1.0, point_crops: float = 0.0,
               jitter: Jitter | None = Jitter(), intensity: Intensity | None = None,
               sigma: float | None = None) -> Batch:
    """Cut, label and augment one batch of crops from images ``idx``.

    The label maps are dot maps, or Gaussian density maps with std ``sigma`` when it is given.
    Both sum to the crop's count, and the Gaussians are isotropic, so flips and rotations keep them exact.
    ``intensity``: per-crop gain, gamma, blur and noise after the colour jitter (see ``augment.Intensity``).
    """
    tops, lefts = sample_boxes(bank, idx, size, gen, zero_keep=zero_keep, point_crops=point_crops)
    images = crop_images(bank, idx, tops, lefts, size).to(device, non_blocking=True)
    maps = None
    if bank.labelled:
        maps = (dot_maps(bank, idx, tops, lefts, size) if sigma is None
                else density_targets(bank, idx, tops, lefts, size, sigma))
        maps = maps.to(device, non_blocking=True)
    images, maps = flip_rotate([images, maps], gen)
    images = images.float().div_(255)
    if jitter is not None:
        images = color_jitter(images, jitter, gen)
    if intensity is not None:
        images = intensity_augment(images, intensity, gen)
    return Batch(images, maps)
