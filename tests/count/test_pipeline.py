"""The in-memory crop pipeline: counts come from the points inside, augmentations keep them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from instlib.count.augment import Jitter, color_jitter
from instlib.count.bank import ImageBank, channel_stats, concat_banks, load_bank
from instlib.count.batches import box_counts, crop_images, dot_maps, epoch_indices, make_batch, random_boxes, sample_boxes
from instlib.count.predict import image_tiles
from instlib.data.folder import list_samples
from instlib.data.maps import points_in_box

from .conftest import write_folder


def _bank(points: list[np.ndarray], shapes: list[tuple[int, int]], channels: int = 1) -> ImageBank:
    """A bank whose images are 255 exactly at the points' pixels and 0 elsewhere."""
    images = []
    for pts, (h, w) in zip(points, shapes):
        im = torch.zeros(channels, h, w, dtype=torch.uint8)
        im[:, np.floor(pts[:, 1]).astype(int), np.floor(pts[:, 0]).astype(int)] = 255
        images.append(im)
    offsets = torch.tensor([0, *np.cumsum([len(p) for p in points])])
    return ImageBank([f"i{k}" for k in range(len(points))], [None] * len(points), images,
                     torch.from_numpy(np.concatenate(points)), offsets)


@pytest.fixture
def bank() -> ImageBank:
    rng = np.random.default_rng(0)
    shapes = [(120, 150), (90, 90), (200, 130), (40, 30)]  # the last is smaller than the crops
    points = []
    for h, w in shapes:
        n = int(rng.integers(0, 60))
        # Distinct pixels, sub-pixel positions: each point lights its own pixel.
        flat = rng.choice(h * w, n, replace=False)
        points.append(np.stack([flat % w + rng.random(n), flat // w + rng.random(n)], 1))
    return _bank(points, shapes)


def test_crop_counts_equal_points_inside(bank):
    gen = torch.Generator().manual_seed(1)
    idx = torch.randint(0, len(bank), (300,), generator=gen)
    tops, lefts = random_boxes(bank, idx, 64, gen)
    counts = box_counts(bank, idx, tops, lefts, 64)
    maps = dot_maps(bank, idx, tops, lefts, 64)
    for k in range(len(idx)):
        i = int(idx[k])
        pts = bank.points[bank.offsets[i]:bank.offsets[i + 1]].numpy()
        inside = points_in_box(pts, int(tops[k]), int(lefts[k]), 64, 64)
        assert counts[k] == inside.sum()
        assert maps[k].sum() == inside.sum()
        # The dots sit at the points' pixels within the crop.
        expect = torch.zeros(64, 64)
        for x, y in pts[inside]:
            expect[int(y) - int(tops[k]), int(x) - int(lefts[k])] += 1
        assert torch.equal(maps[k, 0], expect)


def test_small_images_are_padded_and_keep_all_their_points(bank):
    idx = torch.tensor([3])
    tops, lefts = random_boxes(bank, idx, 64, torch.Generator())
    assert (tops == 0).all() and (lefts == 0).all()
    crops = crop_images(bank, idx, tops, lefts, 64)
    assert crops.shape == (1, 3, 64, 64)
    assert (crops[0, :, 40:, :] == 0).all() and (crops[0, :, :, 30:] == 0).all()
    assert box_counts(bank, idx, tops, lefts, 64) == bank.counts()[3]


def test_flips_and_rotations_move_image_and_dots_together(bank):
    gen = torch.Generator().manual_seed(3)
    for _ in range(5):
        idx = torch.randint(0, len(bank), (16,), generator=gen)
        state = gen.get_state()
        tops, lefts = sample_boxes(bank, idx, 64, gen, zero_keep=1.0)
        before = box_counts(bank, idx, tops, lefts, 64)
        gen.set_state(state)
        batch = make_batch(bank, idx, 64, gen, jitter=None)
        assert torch.equal(batch.counts, before)
        # Images are bright exactly where the (augmented) dot maps hold a point.
        assert torch.equal(batch.images[:, :1] > 0.5, batch.maps > 0)


def test_augmentations_actually_vary(bank):
    gen = torch.Generator().manual_seed(4)
    idx = torch.zeros(64, dtype=torch.long)
    batch = make_batch(bank, idx, 64, gen, jitter=None, zero_keep=1.0)
    # Same image, random boxes and orientations: many distinct crops.
    assert len({tuple(m.flatten().nonzero().flatten().tolist()) for m in batch.maps}) > 20


def test_colour_jitter_stays_in_range_and_is_per_image():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 16, 16).repeat(8, 1, 1, 1)
    y = color_jitter(x, Jitter(), gen)
    assert y.shape == x.shape and y.min() >= 0 and y.max() <= 1
    assert len({round(float(v), 5) for v in y.mean(dim=(1, 2, 3))}) == 8
    assert torch.allclose(color_jitter(x, Jitter(0, 0, 0, 0), gen), x, atol=1e-5)


def test_zero_cell_crops_are_down_sampled():
    # Few cells in a large image: most random crops are empty.
    pts = [np.random.default_rng(0).uniform(0, 400, size=(8, 2))]
    bank = _bank(pts, [(400, 400)])
    idx = torch.zeros(2000, dtype=torch.long)
    empty = {}
    for keep in (1.0, 0.0):
        tops, lefts = sample_boxes(bank, idx, 64, torch.Generator().manual_seed(0), zero_keep=keep, tries=4)
        empty[keep] = float((box_counts(bank, idx, tops, lefts, 64) == 0).float().mean())
    assert empty[1.0] > 0.6
    # Four tries per crop, empty ones never kept unless the last: about empty[1.0] ** 4 are left.
    assert empty[0.0] < empty[1.0] ** 4 + 0.05


def test_epoch_indices_visit_every_image_in_full_batches():
    batches = epoch_indices(10, 4, torch.Generator().manual_seed(0))
    assert [len(b) for b in batches] == [4, 4, 4]
    assert set(torch.cat(batches).tolist()) == set(range(10))
    assert len(epoch_indices(10, 4, torch.Generator(), steps=7)) == 7


def test_channel_stats_match_numpy(bank):
    mean, std = channel_stats(bank)
    pix = np.concatenate([im.numpy().ravel() for im in bank.images]) / 255.0
    assert np.allclose(mean, pix.mean(), atol=1e-9) and np.allclose(std, pix.std(), atol=1e-9)


def test_tiles_cover_the_image_once(bank):
    im = bank.images[2]  # 200 x 130
    tiles = image_tiles(im, 64)
    assert tiles.shape == (4 * 3, 3, 64, 64)
    assert int(tiles[:, 0].sum()) == int(im.sum())


def test_unlabelled_bank_never_opens_points_files(folders, garbage_points_copy):
    samples = list_samples(garbage_points_copy)
    bank = load_bank(samples, labelled=False)
    assert not bank.labelled and len(bank) == 20
    with pytest.raises(RuntimeError):
        bank.counts()
    batch = make_batch(bank, torch.arange(4), 48, torch.Generator())
    assert batch.maps is None and batch.images.shape == (4, 3, 48, 48)
    labelled = load_bank(list_samples(folders["real"]))
    assert torch.equal(labelled.without_labels().images[0], bank.images[0])


def test_banks_join_and_split(folders, tmp_path):
    a = load_bank(list_samples(folders["real"]))
    b = load_bank(list_samples(folders["test"]))
    both = concat_banks([a, b])
    assert torch.equal(both.counts(), torch.cat([a.counts(), b.counts()]))
    sub = both.subset([21, 3])
    assert sub.names == [both.names[21], both.names[3]]
    assert torch.equal(sub.counts(), both.counts()[[21, 3]])
    assert a.channels == (1,)
    rgb = write_folder(tmp_path / "rgb", [np.zeros((8, 8, 3), np.float32)], [np.zeros((0, 2))])
    assert load_bank(list_samples(rgb)).channels == (3,)
