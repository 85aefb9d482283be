"""Cell size measured at the points: simulated nuclei of two known sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from instlib.config import SynHCConfig
from instlib.data.cellsize import estimate_cell_size
from instlib.data.images import write_image
from instlib.data.points import write_points
from instlib.data.simulate import SimConfig, colorize, render_fluorescence
from instlib.data.synth import image_rng, synthesize_from_points
from instlib.errors import DataError


def _sim(root: Path, radius: tuple[float, float], n: int = 3) -> Path:
    for i in range(n):
        img, pts = render_fluorescence(12, (160, 160), image_rng(5, f"r{i}"), SimConfig(radius=radius))
        write_image(root / "images" / f"f{i}.png", colorize(img, "dapi"))
        write_points(root / "points" / f"f{i}.csv", pts)
    return root


def test_estimates_order_and_are_close(tmp_path):
    small = estimate_cell_size(_sim(tmp_path / "small", (5.0, 7.0)))  # diameters 10-14 px
    large = estimate_cell_size(_sim(tmp_path / "large", (12.0, 16.0)))  # diameters 24-32 px
    assert small < large
    assert 8 <= small <= 18 and 19 <= large <= 40
    assert large / small == pytest.approx(28 / 12, rel=0.35)


def test_synth_auto_records_the_estimate(tmp_path):
    real = _sim(tmp_path / "real", (12.0, 16.0), n=2)
    out = synthesize_from_points(real, tmp_path / "syn", SynHCConfig(cell_size="auto"), progress=False)
    sizes = pd.read_csv(out / "manifest.csv")["cell_size"]
    assert np.allclose(sizes, estimate_cell_size(real)) and sizes.iloc[0] > 19


def test_no_points_no_estimate(tmp_path):
    real = _sim(tmp_path / "real", (5.0, 7.0), n=1)
    (real / "points" / "f0.csv").write_text("X,Y\n")
    with pytest.raises(DataError, match="no annotated cells"):
        estimate_cell_size(real)


def test_coarse_scales_agree_with_full_resolution():
    """Large scales are measured on block-averaged copies; the estimate stays the full-resolution one."""
    from scipy import ndimage

    from instlib.data.cellsize import image_cell_size

    img, pts = render_fluorescence(20, (256, 320), image_rng(3, "big"), SimConfig(radius=(12.0, 16.0)))
    gray = img.astype(np.float32) / img.max()
    assert gray.ndim == 2
    sigmas = np.geomspace(3.0, 120.0, 48) / (2 * np.sqrt(2))
    rows, cols = np.round(pts[:, 1]).astype(int).clip(0, 255), np.round(pts[:, 0]).astype(int).clip(0, 319)
    full = [-(s ** 2) * ndimage.gaussian_laplace(gray, s)[rows, cols].mean() for s in sigmas]
    exact = 2 * np.sqrt(2) * sigmas[int(np.argmax(full))]
    assert image_cell_size(gray, pts, sigmas) == pytest.approx(exact, rel=0.09)  # within one scale step
