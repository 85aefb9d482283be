"""The density-map counter: a ``timm`` encoder with a light U-Net decoder (FCRN / CSRNet style).

The encoder gives feature maps at strides 2 to 32 (``features_only``); the decoder merges them top
down (upsample, add a 1x1 projection of the skip, 3x3 conv) until ``out_stride`` and a small head
outputs a non-negative density on that grid. The count of the crop (of any region) is the sum of
the density over it.

The loss is the pixel MSE between the predicted grid and the Gaussian target map summed into the
same grid, both multiplied by ``density_scale``: a per-pixel density is of the order of 1e-3, and
unscaled its squared errors are too small for Adam's default epsilon and learning rates (FCRN and
CSRNet scale their targets the same way). A second term, ``count_weight`` times the absolute error
of each crop's count (as DM-Count's count loss), supervises the sum itself: the pixel term alone
tolerates small errors spread over every pixel that add up to whole cells over a large image.
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import nn

from instlib.count.backbone import create_backbone
from instlib.count.grid import pool_to_grid
from instlib.count.spec import ModelSpec


def _conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class UNetDecoder(nn.Module):
    """Top-down merge of encoder features ``(stride 2, 4, ..., 32)`` into one ``width``-channel map at ``out_stride``."""

    def __init__(self, channels: list[int], reductions: list[int], out_stride: int, width: int):
        super().__init__()
        keep = [i for i, r in enumerate(reductions) if r >= out_stride]
        if not keep or reductions[keep[0]] != out_stride:
            raise ValueError(f"out_stride {out_stride} is not one of the encoder's strides {reductions}")
        self.first = keep[0]  # the finest feature map used
        self.lateral = nn.ModuleList(nn.Conv2d(channels[i], width, 1) for i in keep)
        self.smooth = nn.ModuleList(_conv_bn_relu(width, width) for _ in keep[:-1])

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        feats = feats[self.first:]
        x = self.lateral[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):
            skip = self.lateral[i](feats[i])
            x = F.interpolate(x, size=skip.shape[-2:], mode="nearest") + skip
            x = self.smooth[i](x)
        return x


class DensityNet(nn.Module):
    """``forward(x)`` on normalised ``(B, 3, S, S)`` gives ``(count (B,), density (B, 1, S/s, S/s))``."""

    def __init__(self, spec: ModelSpec, pretrained: bool):
        super().__init__()
        self.scale, self.count_weight, self.count_scales = spec.density_scale, spec.count_weight, spec.count_scales
        self.encoder = create_backbone(spec.backbone, pretrained, features_only=True)
        info = self.encoder.feature_info
        self.decoder = UNetDecoder(info.channels(), info.reduction(), spec.out_stride, spec.decoder_width)
        self.out = nn.Sequential(_conv_bn_relu(spec.decoder_width, spec.decoder_width),
                                 nn.Conv2d(spec.decoder_width, 1, 1))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # ReLU, not softplus: background must be able to reach exactly zero. A softplus floor of
        # 1e-4 per cell is invisible in the pixel loss but adds tens of cells over a whole image.
        density = F.relu(self.out(self.decoder(self.encoder(x)))) / self.scale
        return density.sum(dim=(1, 2, 3)), density

    def loss(self, count: torch.Tensor, density: torch.Tensor, label_map: torch.Tensor) -> torch.Tensor:
        """Pixel MSE of the scaled density against ``label_map`` (``(B, 1, S, S)``) summed into the output grid,
        plus ``count_weight`` times the counts' absolute error: of the whole crop and, for each ``n`` of
        ``count_scales`` above 1, summed over its ``n x n`` parts (the GAME error at that level), averaged over
        the scales. Errors that cancel within a crop are charged at the finer scales."""
        density = density.float()  # sums over 10^4 cells in fp32, whatever the autocast dtype
        target = pool_to_grid(label_map, density.shape[-2:])
        pixel = F.mse_loss(density * self.scale, target * self.scale)
        counts = [(pool_to_grid(density, (n, n)) - pool_to_grid(label_map, (n, n))).abs().sum(dim=(1, 2, 3)).mean()
                  if n > 1 else F.l1_loss(density.sum(dim=(1, 2, 3)), label_map.sum(dim=(1, 2, 3)))
                  for n in self.count_scales]
        return pixel + self.count_weight * sum(counts) / len(counts)

    @torch.no_grad()
    def init_count(self, mean_count: float, crop_size: int) -> None:
        """Start with a flat map summing to ``mean_count`` per crop instead of an arbitrary total."""
        cells = math.ceil(crop_size / self.decoder_stride) ** 2
        per_cell = max(mean_count, 1e-3) / cells * self.scale
        # Zero weights and a positive bias: every unit starts above the ReLU's kink, so all get gradients.
        self.out[-1].weight.zero_()
        self.out[-1].bias.fill_(per_cell)

    @property
    def decoder_stride(self) -> int:
        return self.encoder.feature_info.reduction()[self.decoder.first]
