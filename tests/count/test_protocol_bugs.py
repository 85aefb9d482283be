"""The CutMix rectangle's width range and the std floor of the data normalisation."""

from __future__ import annotations

import numpy as np
import torch

from instlib.count.mix import half_area_masks
from instlib.count.bank import ImageBank, channel_stats


def test_cutmix_width_is_drawn_as_the_authors_do():
    # np.random.randint(W // 2 + 1, W): every width from W/2 + 1 to W - 1, never the full width.
    size = 16
    masks = half_area_masks(4000, size, torch.Generator().manual_seed(0), prob=1.0)
    widths = masks[:, 0].amax(1).sum(1).long()
    assert set(widths.tolist()) == set(range(size // 2 + 1, size))


def test_a_constant_channel_does_not_blow_up_other_images():
    # Blue-coded fluorescence: red and green are zero in every real image.
    blue = torch.zeros(3, 20, 20, dtype=torch.uint8)
    blue[2] = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (20, 20), dtype=np.uint8))
    bank = ImageBank(["a"], ["a.png"], [blue], None, None)
    mean, std = channel_stats(bank)
    assert mean[0] == mean[1] == 0.0
    assert std[0] == std[1] == 1 / 255
    # A synthetic grey pixel at 1.0 stays within a few hundred standard deviations, not a million.
    assert (1.0 - mean[0]) / std[0] == 255.0
    assert std[2] > 0.2
