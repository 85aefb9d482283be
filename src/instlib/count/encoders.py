"""Plain convolutional encoders trained from scratch, registered beside timm's models by name.

A density counter on a handful of fluorescence images does not need ImageNet features: a small U-Net
(FCRN / U-Net style: two 3x3 convolutions per level, the resolution halved between levels) learns blob
shapes and scales from the dot annotations, and costs a fraction of an EfficientNet-B0 per crop on a
CPU. Each encoder here speaks timm's two interfaces, so the heads of :mod:`instlib.count.model` use it
unchanged: ``features_only`` (a feature map per level, and ``feature_info.channels()`` /
``feature_info.reduction()``) and ``forward_features`` / ``num_features`` (the last map).

:data:`ENCODERS` maps a name (``--model unet16``) to the widths of its levels; the first level works at
the input's resolution (stride 1), each next one at half the previous.
"""

from __future__ import annotations

import torch
from torch import nn

#: Widths per level; the stride of level k is 2**k.
ENCODERS: dict[str, tuple[int, ...]] = {
    "unet16": (16, 32, 64, 128),
    "unet32": (32, 64, 128, 256),
}


class FeatureInfo:
    """The part of timm's ``feature_info`` the density decoder reads."""

    def __init__(self, channels: list[int], reductions: list[int]):
        self._channels, self._reductions = channels, reductions

    def channels(self) -> list[int]:
        return list(self._channels)

    def reduction(self) -> list[int]:
        return list(self._reductions)


def _level(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ConvEncoder(nn.Module):
    """``forward(x)``: the feature maps of every level, finest first (timm's ``features_only`` output)."""

    def __init__(self, widths: tuple[int, ...], in_chans: int = 3, features_only: bool = True):
        super().__init__()
        self.levels = nn.ModuleList(_level(cin, cout) for cin, cout in zip((in_chans, *widths[:-1]), widths))
        self.pool = nn.MaxPool2d(2)
        self.feature_info = FeatureInfo(list(widths), [2**k for k in range(len(widths))])
        self.num_features = widths[-1]
        self.features_only = features_only

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The last (coarsest) feature map, as timm's models give it."""
        return self._features(x)[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor] | torch.Tensor:
        return self._features(x) if self.features_only else self.forward_features(x)

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for k, level in enumerate(self.levels):
            x = level(x if k == 0 else self.pool(x))
            feats.append(x)
        return feats


def create_encoder(name: str, features_only: bool) -> ConvEncoder:
    """The encoder registered as ``name`` (random weights: these are trained from scratch)."""
    return ConvEncoder(ENCODERS[name], features_only=features_only)
