"""Plain helpers shared by the style tests (fixtures live in conftest.py)."""

from __future__ import annotations

import numpy as np

RES = 32  # network resolution for most tests: 4 x 4 latents keep the tiny UNet at a few ms per call


def random_uint8(shape, seed) -> np.ndarray:
    """A reproducible random ``uint8`` image."""
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.uint8)
