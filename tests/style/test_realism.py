"""The realism score: a cross-validated real-vs-fake classifier."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from instlib.data.images import write_image
from instlib.data.selection import ImageFilter
from instlib.data.simulate import colorize, render_fluorescence
from instlib.data.synth import image_rng
from instlib.errors import DataError
from instlib.style.realism import realism
from style_helpers import random_uint8


def make_real(root, counts):
    """Simulated fluorescence images (no points: realism never reads them)."""
    for n in counts:
        img, _ = render_fluorescence(n, (48, 64), image_rng(7, f"{root.name}{n}"))
        write_image(root / "images" / f"field{n}.png", colorize(img, "dapi"))
    return root


def test_separable_fakes_score_high_and_lookalikes_lower(tmp_path):
    real = make_real(tmp_path / "real", counts=(3, 8, 14, 20, 5, 11))
    alike = make_real(tmp_path / "alike", counts=(4, 9, 13, 19, 6, 12))
    noise = tmp_path / "noise"
    for i in range(6):
        write_image(noise / "images" / f"n{i}.png", random_uint8((48, 64, 3), i))
    table = realism(real, [alike, noise], folds=3, crop=32, steps=60, out=tmp_path / "r.csv", progress=False)
    acc = dict(zip(table["fake"], table["accuracy"]))
    assert acc[str(noise)] > 0.9
    assert acc[str(alike)] < acc[str(noise)] - 0.2
    assert (table["folds"] == 3).all() and (table["images"] == 6).all() and (table["std"] >= 0).all()
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "r.csv"), table)


def test_refuses_too_few_or_too_small_images(tmp_path):
    real = make_real(tmp_path / "real", counts=(3, 8))
    one = tmp_path / "one"
    write_image(one / "images" / "a.png", np.zeros((48, 64, 3), np.uint8))
    with pytest.raises(DataError, match="at least 2"):
        realism(real, one, crop=32, progress=False)
    with pytest.raises(DataError, match="smaller than the crop"):
        realism(real, real, crop=128, progress=False)


def test_select_picks_the_real_images_compared_against(tmp_path):
    real = make_real(tmp_path / "real", counts=(3, 8, 14, 20))
    for i in range(4):  # another stain in the same folder: only the selected images may be compared
        write_image(real / "images" / f"other{i}.png", random_uint8((48, 64, 3), i))
    alike = make_real(tmp_path / "alike", counts=(4, 9, 13, 19, 6, 12))
    both = realism(real, alike, folds=2, crop=32, steps=5, progress=False)
    fields = realism(real, alike, folds=2, crop=32, steps=5, select=ImageFilter.of(names="field*"), progress=False)
    assert both["images"].item() == 6 and fields["images"].item() == 4
    with pytest.raises(DataError, match="no images left"):
        realism(real, alike, crop=32, select=ImageFilter.of(names="DAPI*"), progress=False)


def test_repeats_average_cross_validations_on_new_folds_and_classifiers(tmp_path):
    real = make_real(tmp_path / "real", counts=(3, 8, 14, 20, 5, 11))
    alike = make_real(tmp_path / "alike", counts=(4, 9, 13, 19, 6, 12))
    runs = [realism(real, alike, folds=2, crop=32, steps=5, seed=s, progress=False) for s in (3, 5)]
    repeated = realism(real, alike, folds=2, crop=32, steps=5, seed=3, repeats=2, progress=False)
    assert repeated["accuracy"].item() == pytest.approx(np.mean([r["accuracy"].item() for r in runs]))
    assert runs[0]["accuracy"].item() != runs[1]["accuracy"].item()  # the second run is a new one
    assert repeated["repeats"].item() == 2 and runs[0]["repeats"].item() == 1
    with pytest.raises(ValueError, match="repeats"):
        realism(real, alike, crop=32, repeats=0, progress=False)
