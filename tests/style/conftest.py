"""Tiny components (built once per session) and small folders in the folder format, built by the tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from instlib.config import SynHCConfig
from instlib.data.images import write_image
from instlib.data.points import write_points
from instlib.data.simulate import colorize, render_fluorescence
from instlib.data.synth import image_rng, synthesize_from_points
from instlib.style import load_components
from instlib.style.tokens import new_token, save_token


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models gain nothing from threads, and on a busy machine spinning OpenMP threads make every
    small convolution up to 40x slower; restored after each test so other suites keep their setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny():
    return load_components("tiny", device="cpu")


def make_real(root: Path, counts=(3, 8, 14, 20), shape=(48, 64)) -> Path:
    """Real-looking RGB fluorescence images (the offline simulator) with their points."""
    for i, n in enumerate(counts):
        img, pts = render_fluorescence(n, shape, image_rng(7, f"real{i}"))
        write_image(root / "images" / f"field{i}.png", colorize(img, "dapi"))
        write_points(root / "points" / f"field{i}.csv", pts)
    return root


@pytest.fixture(scope="session")
def folders(tmp_path_factory) -> dict[str, Path]:
    """``real`` (style) and ``synhc`` (content drawn from the real points, paired by name)."""
    root = tmp_path_factory.mktemp("style-data")
    real = make_real(root / "real")
    synhc = synthesize_from_points(real, root / "synhc", SynHCConfig(cell_size=8), progress=False)
    return {"real": real, "synhc": synhc}


@pytest.fixture(scope="session")
def token_file(tmp_path_factory, tiny) -> Path:
    """An untrained tiny token (its weights are random either way; training is tested on its own)."""
    return save_token(new_token(tiny.hidden_size, base_model="tiny", seed=3),
                      tmp_path_factory.mktemp("token") / "tok.safetensors")
