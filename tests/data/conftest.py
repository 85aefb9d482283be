"""Small folders in the folder format, built by the tests themselves; Hypothesis' settings profiles."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from instlib.data.images import write_image
from instlib.data.points import write_points
from instlib.data.simulate import colorize, render_fluorescence
from instlib.data.synth import image_rng

# 'ci' (the default) keeps the property tests under a minute on two cores; HYPOTHESIS_PROFILE=thorough
# draws twenty times as many folders. No example database: the repository stays clean, and a failure
# prints the blob that reproduces it.
settings.register_profile("ci", max_examples=15, deadline=None, database=None, print_blob=True)
settings.register_profile("thorough", max_examples=300, deadline=None, database=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def make_real_folder(root: Path, n: int = 3, shape=(768, 1024), cells=(7, 300), suffix=".jpg") -> Path:
    """Real-like RGB fluorescence images with CSV points (like IDCIA's 768 x 1024 JPEGs)."""
    for i in range(n):
        rng = image_rng(123, f"real{i}")
        count = int(np.linspace(cells[0], cells[1], n)[i])
        img, pts = render_fluorescence(count, shape, rng)
        write_image(root / "images" / f"220909_GFP-AHPC_A_F{i}{suffix}", colorize(img, "dapi"))
        write_points(root / "points" / f"220909_GFP-AHPC_A_F{i}.csv", pts)
    return root


@pytest.fixture
def make_real():
    return make_real_folder


@pytest.fixture
def real_folder(tmp_path: Path) -> Path:
    return make_real_folder(tmp_path / "real", n=3, shape=(96, 128), cells=(0, 40))
