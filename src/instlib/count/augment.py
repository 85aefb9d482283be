"""Augmentation of a batch of crops on its tensors: colour jitter, flips and 90-degree rotations, and the
intensity changes of fluorescence images (gain, gamma, noise, blur)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch


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


@dataclass(frozen=True)
class Intensity:
    """What changes between fluorescence images of one set: exposure (gain), the detector's response
    (gamma), sensor noise and focus (blur). Each crop draws its own; labels are untouched."""

    gain: float = 1.0  # log-uniform factor in [exp(-gain), exp(gain)]: 1.0 is 0.37x to 2.7x
    gamma: float = 0.4  # exponent in [exp(-gamma), exp(gamma)]
    noise: float = 0.03  # Gaussian noise of std up to this (intensities in [0, 1])
    blur: float = 1.2  # Gaussian blur of std up to this, in pixels (half the crops stay sharp)


def intensity_augment(x: torch.Tensor, aug: Intensity, gen: torch.Generator) -> torch.Tensor:
    """Per-crop gain, gamma, blur and noise of float ``(B, 3, S, S)`` in ``[0, 1]``, clipped to ``[0, 1]``."""
    n, dev = len(x), x.device

    def spread(width: float) -> torch.Tensor:
        return torch.exp((torch.rand(n, generator=gen) * 2 - 1) * width).to(dev).view(-1, 1, 1, 1)

    gain, gamma = spread(aug.gain), spread(aug.gamma)
    sigmas = (torch.rand(n, generator=gen) * aug.blur * (torch.rand(n, generator=gen) < 0.5)).tolist()
    noise = (torch.rand(n, generator=gen) * aug.noise).to(dev).view(-1, 1, 1, 1)
    z = torch.randn(x.shape, generator=gen).to(dev)
    x = (x * gain).clamp_(0, 1).pow_(gamma)
    x = torch.stack([_blur(img, s) if s > 0.3 else img for img, s in zip(x, sigmas)])
    return (x + noise * z).clamp_(0, 1)


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of one ``(C, H, W)`` image, reflecting at the borders."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=image.dtype, device=image.device)
    k = torch.exp(-t**2 / (2 * sigma**2))
    k = (k / k.sum()).view(1, 1, 1, -1).expand(image.shape[0], 1, 1, -1)
    x = torch.nn.functional.pad(image[None], (radius, radius, 0, 0), mode="reflect")
    x = torch.nn.functional.conv2d(x, k, groups=image.shape[0])
    x = torch.nn.functional.pad(x, (0, 0, radius, radius), mode="reflect")
    return torch.nn.functional.conv2d(x, k.transpose(-1, -2), groups=image.shape[0])[0]
