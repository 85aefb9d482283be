"""The training data pipeline: decode once, crop and count in batches, augment on tensors.

Every image is decoded once into a ``uint8 (C, H, W)`` tensor (C = 1 or 3; grayscale is expanded
to RGB only when a crop is cut). Points of all images sit in one ``(P, 2)`` tensor with per-image
offsets, so the cell count of any batch of boxes, and their dot maps, come from one vectorised
point-in-box test instead of per-crop connected components. Flips, 90-degree rotations and colour
jitter run on the batch's tensors (on the GPU when there is one), with the random draws per batch.

Boxes are ``size x size`` at ``(top, left)``; an image smaller than the box is padded with zeros
(black background) to the right and bottom, so every crop has the same shape.
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

from instlib.data.folder import Sample
from instlib.data.cellsize import cell_diameter
from instlib.data.images import read_image, to_uint8
from instlib.data.maps import center_box, density_map
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
        return self._labels()[1].diff().double()

    def _labels(self) -> tuple[torch.Tensor, torch.Tensor]:
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
            pts, off = self._labels()
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


# ---------------------------------------------------------------- boxes and their labels


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
    points, offsets = bank._labels()
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


def cell_sigma(bank: ImageBank, max_images: int = 50) -> float | None:
    """Std in pixels of Gaussian targets shaped like the bank's cells, or None when it has no cells.

    The blob scale of the cells at their points, ``diameter / (2 sqrt 2)`` (:mod:`instlib.data.cellsize`:
    where the normalised Laplacian of Gaussian of a disk peaks), median over at most ``max_images`` images.
    A target as wide as the cell lets a clump of touching cells be counted by its area; a narrower one
    asks for the centre of each, which a saturated clump does not show.
    """
    points, offsets = bank._labels()
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


def density_maps(bank: ImageBank, idx: torch.Tensor, tops: torch.Tensor, lefts: torch.Tensor, size: int,
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
                 zero_keep: float = 1.0, tries: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Random boxes for images ``idx``, with empty boxes kept only with probability ``zero_keep``.

    Each image gets ``tries`` candidate boxes; the first one that holds a cell (or wins the
    ``zero_keep`` draw) is taken, the last candidate always, so an image without cells still
    gives a box. Unlabelled banks (and ``zero_keep >= 1``) take plain random boxes: deciding on
    emptiness would need the labels.
    """
    if not bank.labelled or zero_keep >= 1.0:
        return random_boxes(bank, idx, size, gen)
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


# ---------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Jitter:
    """Colour jitter ranges as in torchvision's ``ColorJitter`` (the authors': 0.2, 0.2, 0.2, 0.1)."""

    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.1


_GRAY = torch.tensor([0.299, 0.587, 0.114])
# RGB <-> YIQ: a hue shift is a rotation of the (I, Q) chroma plane.
_RGB2YIQ = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
_YIQ2RGB = torch.linalg.inv(_RGB2YIQ)


def _factor(n: int, spread: float, gen: torch.Generator) -> torch.Tensor:
    return 1 + (torch.rand(n, generator=gen) * 2 - 1) * spread


def color_jitter(x: torch.Tensor, jitter: Jitter, gen: torch.Generator) -> torch.Tensor:
    """Per-image brightness, contrast, saturation and hue jitter of float ``(B, 3, H, W)`` in ``[0, 1]``.

    As torchvision's ``ColorJitter`` in a fixed order, except that saturation and hue, both linear
    maps of RGB, are applied as one 3x3 matrix per image (no clamp between the two): a few passes
    over the batch instead of a dozen.
    """
    n, dev = len(x), x.device
    brightness, contrast, saturation = (_factor(n, f, gen) for f in (jitter.brightness, jitter.contrast,
                                                                      jitter.saturation))
    angle = (torch.rand(n, generator=gen) * 2 - 1) * jitter.hue * 2 * math.pi
    x = (x * brightness.to(dev).view(-1, 1, 1, 1)).clamp_(0, 1)
    # Contrast blends with the mean gray level of each image.
    c = contrast.to(dev).view(-1, 1, 1, 1)
    gray_mean = (x.mean(dim=(2, 3)) @ _GRAY.to(dev)).view(-1, 1, 1, 1)
    x.mul_(c).add_((1 - c) * gray_mean).clamp_(0, 1)
    # Saturation blends each pixel with its gray value; hue rotates chroma in YIQ.
    s = saturation.view(-1, 1, 1)
    blend = s * torch.eye(3) + (1 - s) * _GRAY.view(1, 1, 3).expand(n, 3, 3)
    rot = torch.zeros(n, 3, 3)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = angle.cos(), -angle.sin(), angle.sin(), angle.cos()
    m = (_YIQ2RGB @ rot @ _RGB2YIQ @ blend).to(dev)
    return torch.bmm(m, x.flatten(2)).view_as(x).clamp_(0, 1)


def flip_rotate(tensors: Sequence[torch.Tensor | None], gen: torch.Generator) -> list[torch.Tensor | None]:
    """The same random flips and 90-degree rotations for every tensor of a batch of ``(B, C, S, S)``.

    Each sample gets one of the 8 symmetries of the square, uniformly (as random horizontal and
    vertical flips with a random number of quarter turns give): an optional transpose, then
    optional flips. Image and label map go through together, so counts are unchanged.
    """
    first = next(t for t in tensors if t is not None)
    transpose, hflip, vflip = (torch.rand(3, len(first), generator=gen) < 0.5).tolist()
    out = []
    for t in tensors:
        if t is None:
            out.append(None)
            continue
        res = torch.empty_like(t)
        # One copy per sample: several times faster than a gather with a per-pixel index.
        for k, v in enumerate(t):
            v = v.transpose(-1, -2) if transpose[k] else v
            v = v.flip(-1) if hflip[k] else v
            res[k] = v.flip(-2) if vflip[k] else v
        out.append(res)
    return out


# ---------------------------------------------------------------- batches


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
               device: torch.device | str = "cpu", zero_keep: float = 1.0, jitter: Jitter | None = Jitter(),
               sigma: float | None = None) -> Batch:
    """Cut, label and augment one batch of crops from images ``idx``.

    The label maps are dot maps, or Gaussian density maps with std ``sigma`` when it is given.
    Both sum to the crop's count, and the Gaussians are isotropic, so flips and rotations keep them exact.
    """
    tops, lefts = sample_boxes(bank, idx, size, gen, zero_keep=zero_keep)
    images = crop_images(bank, idx, tops, lefts, size).to(device, non_blocking=True)
    maps = None
    if bank.labelled:
        maps = dot_maps(bank, idx, tops, lefts, size) if sigma is None else density_maps(bank, idx, tops, lefts,
                                                                                         size, sigma)
        maps = maps.to(device, non_blocking=True)
    images, maps = flip_rotate([images, maps], gen)
    images = images.float().div_(255)
    if jitter is not None:
        images = color_jitter(images, jitter, gen)
    return Batch(images, maps)


# ---------------------------------------------------------------- whole images


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
