from pathlib import Path

import numpy as np

from instlib.data.folder import list_samples, read_manifest
from instlib.data.simulate import PRESETS, render_fluorescence, simulate
from instlib.data.synth import image_rng, render_synhc


def test_simulated_folder_is_deterministic_with_exact_points(tmp_path: Path):
    a = simulate(tmp_path / "a", n=3, size=(64, 80), cells=(5, 30), seed=2, progress=False)
    b = simulate(tmp_path / "b", n=3, size=(64, 80), cells=(5, 30), seed=2, progress=False)
    for sa, sb in zip(list_samples(a), list_samples(b)):
        assert sa.image.read_bytes() == sb.image.read_bytes()
        img, pts = sa.load()
        assert img.shape == (64, 80, 1) and 5 <= len(pts) <= 30
    assert read_manifest(a)["source"].eq("simulated").all()
    dapi = simulate(tmp_path / "d", n=1, size=(64, 80), cells=(5, 30), seed=2, color="dapi", progress=False)
    img, _ = list_samples(dapi)[0].load()
    assert img.shape[-1] == 3 and img[..., 2].mean() > 2 * img[..., 0].mean()  # blue look-up table


def test_looks_like_microscopy_not_like_synhc():
    rng = image_rng(0, "x")
    img, pts = render_fluorescence(80, (256, 256), rng)
    syn = render_synhc(pts, (256, 256), image_rng(0, "y")).astype(np.float32) / 255
    at_cells = img[pts[:, 1].astype(int), pts[:, 0].astype(int)]
    # Nuclei are brighter than the background, with varied brightness (Syn-HC: all saturated).
    assert np.median(at_cells) > 3 * np.median(img)
    assert at_cells.std() / at_cells.mean() > 0.15
    syn_cells = syn[pts[:, 1].astype(int), pts[:, 0].astype(int)]
    assert syn_cells.std() / syn_cells.mean() < 0.1
    # Optical blur: neighbouring pixels correlate far more than in Syn-HC's white-noise background.
    def lag1(a):
        return np.corrcoef(a[:, :-1].ravel(), a[:, 1:].ravel())[0, 1]
    assert lag1(img) > 0.6
    # Texture: many distinct intensity levels inside bright nuclei, not a flat fill.
    assert len(np.unique(np.round(img[img > np.percentile(img, 95)], 3))) > 50


def test_stains_label_every_nucleus_or_only_the_positive_cells(tmp_path: Path):
    out = simulate(tmp_path / "s", n=24, size=(96, 96), cells=(20, 40), seed=1, stains=("DAPI", "Cy3", "GFAP"),
                   progress=False)
    m = read_manifest(out).set_index("name")
    assert list(m["stain"].iloc[:3]) == ["DAPI", "Cy3", "GFAP"] and set(m["stain"]) == {"DAPI", "Cy3", "GFAP"}
    nuclear, marker = m.loc[m["stain"] == "DAPI", "count"], m.loc[m["stain"] != "DAPI", "count"]
    assert nuclear.between(20, 40).all()  # a nuclear stain labels the whole field
    assert marker.mean() < 0.5 * nuclear.mean() and (marker <= 1).any()  # markers: a few positives, often 0-1
    for s in list_samples(out):  # labels sit on bright cells, whatever the stain
        img, pts = s.load()
        if len(pts):
            assert np.median(img[pts[:, 1].astype(int), pts[:, 0].astype(int), 0]) > 2 * np.percentile(img, 10)


def test_the_hard_preset_saturates_clumps_and_spreads_brightness():
    def measures(config):
        """Share of saturated pixels, and the 90th over the 10th percentile of the brightness at the cells."""
        out = []
        for seed in range(4):
            img, pts = render_fluorescence(40, (192, 192), image_rng(seed, "z"), config)
            at = img[pts[:, 1].astype(int), pts[:, 0].astype(int)]
            out.append(((img >= 1).mean(), np.percentile(at, 90) / np.percentile(at, 10)))
        return np.mean(out, axis=0)

    (plain_flat, plain_spread), (hard_flat, hard_spread) = measures(PRESETS["nuclei"]), measures(PRESETS["hard"])
    assert hard_flat > 1.5 * plain_flat and hard_spread > 1.2 * plain_spread
