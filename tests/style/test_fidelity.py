"""Label fidelity: blobs matched to points, and filtering a styled folder by it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from instlib.data.folder import read_manifest, write_manifest
from instlib.data.images import write_image
from instlib.data.points import write_points
from instlib.data.synth import SynHCConfig, image_rng, random_points, render_synhc
from instlib.errors import DataError
from instlib.style import filter_by_fidelity, measure_fidelity, measure_folder


@pytest.fixture(scope="module")
def synhc():
    rng = image_rng(0, "fidelity")
    points = random_points(12, (128, 128), rng)
    return render_synhc(points, (128, 128), rng, SynHCConfig(cell_size=12)), points


def test_clean_cells_are_all_found(synhc):
    img, pts = synhc
    fid = measure_fidelity(img, pts)
    assert fid.recall >= 0.9 and fid.spurious <= 1 and fid.cells == 12 and 2 < fid.sigma < 8


def test_wrong_labels_score_low(synhc):
    img, pts = synhc
    moved = (pts + [50.0, 37.0]) % 128  # the same layout shifted: labels no longer where the cells are
    fid = measure_fidelity(img, moved)
    assert fid.recall <= 0.3 and fid.spurious >= 8


def test_erased_cells_lower_the_recall(synhc):
    img, pts = synhc
    flat = img.astype(np.float32).copy()
    for x, y in pts[:6]:  # paint half of the cells over with background
        flat[max(int(y) - 10, 0):int(y) + 10, max(int(x) - 10, 0):int(x) + 10] = np.median(img)
    full, half = measure_fidelity(img, pts), measure_fidelity(flat, pts)
    assert half.recall <= full.recall - 0.3


def test_blank_and_noise_images():
    assert measure_fidelity(np.zeros((64, 64)), np.zeros((0, 2))).spurious == 0
    noise = np.clip(image_rng(1, "noise").normal(0.1, 0.02, (96, 96)), 0, 1)
    assert measure_fidelity(noise, np.zeros((0, 2))).spurious <= 3
    labels = random_points(20, (96, 96), image_rng(2, "p"))
    assert measure_fidelity(ndimage.gaussian_filter(noise, 1), labels).recall < 0.3  # texture is not cells


def _styled_folder(root, recalls):
    rows = []
    for i, r in enumerate(recalls):
        write_image(root / "images" / f"im{i}.png", np.full((8, 8), 40 * i, np.uint8))
        write_points(root / "points" / f"im{i}.csv", np.array([[1.0, 2.0]]))
        rows.append({"name": f"im{i}", "count": 1, "source": "inst", "fidelity_recall": r, "fidelity_spurious": i})
    write_manifest(root, rows)
    return root


def test_filter_keeps_what_passes_and_leaves_the_source(tmp_path):
    src = _styled_folder(tmp_path / "styled", [0.9, 0.2, 0.7, 1.0])
    out = filter_by_fidelity(src, 0.5, tmp_path / "kept", max_spurious=2)
    assert list(read_manifest(out)["name"]) == ["im0", "im2"]
    assert (out / "images" / "im2.png").read_bytes() == (src / "images" / "im2.png").read_bytes()
    assert sorted(p.name for p in (out / "points").iterdir()) == ["im0.csv", "im2.csv"]
    assert len(read_manifest(src)) == 4


def test_filter_needs_fidelity_columns(tmp_path):
    src = _styled_folder(tmp_path / "styled", [0.9])
    pd.read_csv(src / "manifest.csv").drop(columns=["fidelity_recall"]).to_csv(src / "manifest.csv", index=False)
    with pytest.raises(DataError, match="fidelity_recall"):
        filter_by_fidelity(src, 0.5, tmp_path / "kept")


def test_measure_folder(folders):
    rows = measure_folder(folders["synhc"])
    assert [r["name"] for r in rows] == ["field0", "field1", "field2", "field3"]
    assert all(r["recall"] >= 0.5 for r in rows)
