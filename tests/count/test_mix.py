"""CutMix and DACS: masks, mixed counts, pseudo-labels, and no reading of target labels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instlib.count.mix import MIXES, cutmix, dacs_mix, get_mix, half_area_masks, pseudo_label
from instlib.count.bank import load_bank
from instlib.count.batches import Batch, crop_images, dot_maps, random_boxes
from instlib.count.model import CountModel
from instlib.count.spec import ModelSpec
from instlib.data.folder import list_samples
from instlib.errors import InstlibError


@pytest.mark.parametrize("size", [48, 64, 200, 201])
def test_mask_covers_half_the_area(size):
    masks = half_area_masks(500, size, torch.Generator().manual_seed(0), prob=1.0)
    area = masks.sum(dim=(1, 2, 3))
    # Height = round(area / width): off by at most half a row of the rectangle's width.
    assert (torch.abs(area - size * size / 2) <= size / 2).all()
    # An axis-aligned rectangle, width in (size/2, size).
    widths = masks[:, 0].amax(1).sum(1)
    heights = masks[:, 0].amax(2).sum(1)
    assert torch.equal(widths * heights, area)
    assert (widths > size // 2).all() and (widths < size).all()


def test_mask_probability():
    masks = half_area_masks(2000, 32, torch.Generator().manual_seed(0), prob=0.5)
    share = float((masks.sum(dim=(1, 2, 3)) > 0).float().mean())
    assert 0.45 < share < 0.55
    assert half_area_masks(50, 32, torch.Generator(), prob=0.0).sum() == 0


def _labelled_batch(folder, gen, size=48):
    bank = load_bank(list_samples(folder))
    idx = torch.randint(0, len(bank), (8,), generator=gen)
    tops, lefts = random_boxes(bank, idx, size, gen)
    images = crop_images(bank, idx, tops, lefts, size).float() / 255
    points = []  # crop-relative pixels of the points inside each crop, from the point lists
    for k in range(8):
        i = int(idx[k])
        p = np.floor(bank.points[bank.offsets[i]:bank.offsets[i + 1]].numpy()).astype(int)
        r, c = p[:, 1] - int(tops[k]), p[:, 0] - int(lefts[k])
        keep = (r >= 0) & (r < size) & (c >= 0) & (c < size)
        points.append((r[keep], c[keep]))
    return Batch(images, dot_maps(bank, idx, tops, lefts, size)), points


def test_cutmix_counts_equal_the_points_of_the_mixed_dot_map(folders):
    gen = torch.Generator().manual_seed(0)
    target, t_pts = _labelled_batch(folders["real"], gen)
    source, s_pts = _labelled_batch(folders["syn"], gen)
    mask = half_area_masks(8, 48, gen, prob=0.5)
    mixed = cutmix(target, source, mask)
    for k in range(8):
        m = mask[k, 0].bool().numpy()
        expect = m[s_pts[k]].sum() + (~m[t_pts[k]]).sum()
        assert mixed.counts[k] == expect
        assert torch.equal(mixed.images[k], torch.where(mask[k].bool(), source.images[k], target.images[k]))
    unmixed = mask.sum(dim=(1, 2, 3)) == 0
    assert torch.equal(mixed.counts[unmixed], target.counts[unmixed])


def test_cutmix_refuses_unlabelled_targets():
    b = Batch(torch.zeros(2, 3, 8, 8), None)
    with pytest.raises(ValueError):
        cutmix(b, Batch(torch.zeros(2, 3, 8, 8), torch.zeros(2, 1, 8, 8)), torch.ones(2, 1, 8, 8))


def test_dacs_labels_the_target_part_with_the_pseudo_density(folders):
    gen = torch.Generator().manual_seed(1)
    source, _ = _labelled_batch(folders["syn"], gen)
    target_images = torch.rand(8, 3, 48, 48, generator=gen)
    pseudo = torch.full((8, 1, 48, 48), 0.01)  # 23.04 cells per crop, evenly spread
    mask = half_area_masks(8, 48, gen, prob=1.0)
    mixed = dacs_mix(target_images, source, mask, pseudo)
    expect = (source.maps * mask).sum(dim=(1, 2, 3)) + 0.01 * (1 - mask).sum(dim=(1, 2, 3))
    assert torch.allclose(mixed.counts, expect)


def test_pseudo_labels_are_the_models_density_and_carry_no_gradient():
    model = CountModel(ModelSpec(backbone="test_efficientnet", density=True, crop_size=48))
    model.train()
    x = torch.rand(4, 3, 48, 48)
    maps = pseudo_label(model, x)
    assert model.training and not maps.requires_grad
    model.eval()
    _, density = model(x)
    assert torch.allclose(maps.sum(dim=(1, 2, 3)), density.sum(dim=(1, 2, 3)), rtol=1e-5)


def test_dacs_loss_runs_on_an_unlabelled_target(folders):
    gen = torch.Generator().manual_seed(2)
    source, _ = _labelled_batch(folders["syn"], gen)
    target = Batch(torch.rand(8, 3, 48, 48, generator=gen), None)  # no labels to read
    model = CountModel(ModelSpec(backbone="test_efficientnet", density=True, crop_size=48))
    loss = MIXES["dacs"].loss(model, source, target, gen, prob=1.0)
    loss.backward()
    assert torch.isfinite(loss)


def test_registry():
    assert set(MIXES) == {"none", "cutmix", "dacs"}
    assert not MIXES["dacs"].target_labelled and MIXES["cutmix"].target_labelled
    with pytest.raises(InstlibError, match="unknown mixing"):
        get_mix("mixup")
