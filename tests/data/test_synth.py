from pathlib import Path

import numpy as np
import pytest

from instlib.config import SynHCConfig
from instlib.data.folder import list_samples, read_manifest
from instlib.data.images import read_image
from instlib.data.points import read_points
from instlib.data.synth import fill_ellipses, gradual_counts, render_synhc, synthesize_from_points, synthesize_random


def _bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.suffix in (".png", ".csv")}


def test_from_points_keeps_size_and_exact_points_of_real_jpegs(tmp_path: Path, make_real):
    real = make_real(tmp_path / "real", n=2, shape=(768, 1024), cells=(7, 300))
    out = synthesize_from_points(real, tmp_path / "syn", SynHCConfig(cell_size=15, seed=7), progress=False)
    for s in list_samples(real):
        img = read_image(out / "images" / f"{s.name}.png")
        assert img.shape == (768, 1024, 1)  # same canvas, single channel
        np.testing.assert_array_equal(read_points(out / "points" / f"{s.name}.csv"), read_points(s.points))
    manifest = read_manifest(out)
    assert manifest["count"].tolist() == [7, 300] and manifest["style"].tolist() == manifest["name"].tolist()


def test_same_seed_same_bytes_whatever_workers_and_shards(tmp_path: Path, real_folder: Path):
    a = _bytes(synthesize_from_points(real_folder, tmp_path / "a", SynHCConfig(seed=3), progress=False))
    b = _bytes(synthesize_from_points(real_folder, tmp_path / "b", SynHCConfig(seed=3), workers=2, progress=False))
    for i in range(2):
        synthesize_from_points(real_folder, tmp_path / "c", SynHCConfig(seed=3), shard=(i, 2), progress=False)
    c = {k: v for k, v in _bytes(tmp_path / "c").items() if not k.startswith("manifest")}
    a_files = {k: v for k, v in a.items() if not k.startswith("manifest")}
    assert a == b and a_files == c
    assert read_manifest(tmp_path / "c").equals(read_manifest(tmp_path / "a"))
    d = _bytes(synthesize_from_points(real_folder, tmp_path / "d", SynHCConfig(seed=4), progress=False))
    assert all(d[k] != a[k] for k in a if k.startswith("images/"))


def test_ellipse_geometry_follows_the_cell_size():
    canvas = np.zeros((60, 60), np.float32)
    fill_ellipses(canvas, np.array([[30.0, 30.0]]), np.array([[10.0, 5.0]]), np.array([90.0]), 1.0)
    rows, cols = np.nonzero(canvas)
    assert np.ptp(rows) in (19, 20) and np.ptp(cols) in (9, 10)  # rotated 90 degrees: tall ellipse
    assert canvas.sum() == pytest.approx(np.pi * 10 * 5, rel=0.08)
    img = render_synhc(np.array([[30.0, 30.0]]), (60, 60), np.random.default_rng(0))
    bright = img > 150
    area = bright.sum()
    assert np.pi * 6 * 6 <= area <= np.pi * 9 * 9  # cs=15: semi-axes in [6, 9)
    assert 0 < img[~bright].mean() < 60  # background mean in [10, 30], jittered


def test_gradual_series_uses_the_first_cells(tmp_path: Path, real_folder: Path):
    out = synthesize_from_points(real_folder, tmp_path / "g", SynHCConfig(seed=0), steps=4, progress=False)
    name = list_samples(real_folder)[-1].name
    full = read_points(real_folder / "points" / f"{name}.csv")
    assert gradual_counts(40, 4).tolist() == [1, 14, 27, 40]
    for k, n in enumerate([1, 14, 27, 40]):
        np.testing.assert_array_equal(read_points(out / "points" / f"{name}_g{k:02d}.csv"), full[:n])


def test_random_layouts_and_canvas_rescaling(tmp_path: Path, real_folder: Path):
    out = synthesize_random(tmp_path / "r", n=6, size=(50, 70), cells=(3, 9), config=SynHCConfig(seed=1), progress=False)
    m = read_manifest(out)
    assert len(m) == 6 and m["count"].between(3, 9).all()
    assert all(read_image(s.image).shape == (50, 70, 1) for s in list_samples(out))
    big = synthesize_from_points(real_folder, tmp_path / "800", SynHCConfig(seed=0), size=(80, 80), progress=False)
    for s in list_samples(big):
        img, pts = s.load()
        assert img.shape[:2] == (80, 80) and (pts < 80).all()


def test_bad_inputs_write_nothing(tmp_path: Path, real_folder: Path):
    (real_folder / "points" / "220909_GFP-AHPC_A_F1.csv").write_text("X,Y\n1,oops\n")
    with pytest.raises(Exception, match="line 2: non-numeric"):
        synthesize_from_points(real_folder, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
