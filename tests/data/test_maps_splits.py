import numpy as np
import pytest

from instlib.data.maps import center_box, crop, density_map, dot_map, points_in_box, rescale_points
from instlib.data.splits import stratified_kfold


def test_dot_and_density_maps_sum_to_the_count_even_at_borders():
    pts = np.array([[0.1, 0.1], [63.9, 47.9], [30.0, 20.0], [30.2, 20.4], [0.0, 47.5]])
    assert dot_map(pts, (48, 64)).sum() == 5
    assert dot_map(pts, (48, 64))[20, 30] == 2  # two points share a pixel
    for sigma in (1.0, 4.0, 10.0):
        assert density_map(pts, (48, 64), sigma=sigma).sum() == pytest.approx(5.0, abs=1e-4)
    assert density_map(np.zeros((0, 2)), (8, 8)).sum() == 0


def test_density_peaks_at_the_point():
    d = density_map(np.array([[20.5, 10.5]]), (32, 32), sigma=2.0)
    assert np.unravel_index(d.argmax(), d.shape) == (10, 20)


def test_crop_carries_exactly_the_points_inside():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 100, (500, 2))
    img = np.zeros((100, 100, 1), np.float32)
    sub, kept = crop(img, pts, top=10, left=30, height=40, width=50)
    assert sub.shape == (40, 50, 1)
    inside = (pts[:, 0] >= 30) & (pts[:, 0] < 80) & (pts[:, 1] >= 10) & (pts[:, 1] < 50)
    assert len(kept) == inside.sum() == points_in_box(pts, 10, 30, 40, 50).sum()
    assert kept[:, 0].min() >= 0 and kept[:, 0].max() < 50 and kept[:, 1].max() < 40
    with pytest.raises(ValueError):
        crop(img, pts, 90, 0, 20, 20)


def test_center_box_and_rescale():
    assert center_box((768, 1024), 200) == (284, 412, 200, 200)
    assert center_box((100, 150), 200) == (0, 0, 100, 150)
    out = rescale_points(np.array([[1023.9, 767.9], [0, 0]]), (768, 1024), (800, 800))
    assert out.max() < 800 and out.min() == 0


def test_folds_are_disjoint_complete_and_stratified():
    counts = np.random.default_rng(1).integers(7, 300, size=41)
    folds = stratified_kfold(counts, n_folds=5, seed=42)
    tests = [te for _, te in folds]
    assert sorted(np.concatenate(tests).tolist()) == list(range(41))
    for tr, te in folds:
        assert not set(tr) & set(te)
    # Each fold spans the count range: its median is near the global median.
    medians = [np.median(counts[te]) for te in tests]
    assert max(abs(m - np.median(counts)) for m in medians) < 0.35 * np.ptp(counts)
    assert [t.tolist() for t in tests] == [t.tolist() for _, t in stratified_kfold(counts, 5, 42)]
    with pytest.raises(ValueError):
        stratified_kfold(counts[:3], n_folds=5)
