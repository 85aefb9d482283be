"""Small generated folders for the counting tests (simulated "real" images, Syn-HC, odd cases)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from instlib.config import SynHCConfig
from instlib.count import TrainConfig
from instlib.data.images import write_image
from instlib.data.points import write_points
from instlib.data.simulate import simulate
from instlib.data.synth import synthesize_random

# Tiny models do many small ops: one thread avoids OpenMP barrier costs, which on a busy 2-core
# machine can make two threads over ten times slower than one.
torch.set_num_threads(1)


def tiny_config(**overrides) -> TrainConfig:
    """A configuration that trains in seconds on a CPU."""
    base = dict(model="test_efficientnet", pretrained=False, epochs=2, finetune_epochs=1, crop_size=48,
                batch_size=8, lr=1e-3, eval_batch_size=64, crops_per_epoch=24)
    return TrainConfig(**{**base, **overrides})


def write_folder(root: Path, images: list[np.ndarray], points: list[np.ndarray], names: list[str] | None = None
                 ) -> Path:
    """Write images and points in the folder format."""
    names = names or [f"img_{i:03d}" for i in range(len(images))]
    for name, img, pts in zip(names, images, points):
        write_image(root / "images" / f"{name}.png", img)
        write_points(root / "points" / f"{name}.csv", pts)
    return root


def disc_image(points: np.ndarray, shape: tuple[int, int], radius: float = 3.0) -> np.ndarray:
    """Bright discs on a dark background, one per point (a simple labelled image)."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    img = np.full(shape, 0.05, np.float32)
    for x, y in points:
        img[(xx + 0.5 - x) ** 2 + (yy + 0.5 - y) ** 2 <= radius**2] = 0.9
    return img


@pytest.fixture(scope="session")
def folders(tmp_path_factory) -> dict[str, Path]:
    """``real`` (20 simulated gray images), ``test`` (8 more), ``syn`` (24 Syn-HC), ``rgb`` (6 colour)."""
    root = tmp_path_factory.mktemp("count-data")
    out = {
        "real": simulate(root / "real", n=20, size=(96, 112), cells=(2, 40), seed=0, progress=False),
        "test": simulate(root / "test", n=8, size=(96, 112), cells=(2, 40), seed=1, progress=False),
        "syn": synthesize_random(root / "syn", n=24, size=(96, 96), cells=(2, 40), config=SynHCConfig(cell_size=10, seed=2),
                                 progress=False),
        "rgb": simulate(root / "rgb", n=6, size=(96, 112), cells=(2, 40), seed=3, color="dapi", progress=False),
    }
    return out


@pytest.fixture
def garbage_points_copy(folders, tmp_path) -> Path:
    """A copy of ``real`` whose points files cannot be parsed: reading any of them raises."""
    dst = Path(shutil.copytree(folders["real"], tmp_path / "real-unlabelled"))
    for p in (dst / "points").iterdir():
        p.write_text("this is not,a points file\nat,all\n")
    return dst
