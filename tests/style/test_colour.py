"""The styled image keeps the style image's colour model (gray, or one hue), and colour images stay colour."""

from __future__ import annotations

import numpy as np

from instlib.style.colour import colour_axis, keep_colour_axis


def _hue_image(rng, gains) -> np.ndarray:
    intensity = rng.uniform(0, 255, (32, 40))
    return np.clip(intensity[..., None] * np.array(gains), 0, 255).round().astype(np.uint8)


def test_a_single_hue_or_gray_image_has_a_colour_axis_and_a_colour_image_none():
    rng = np.random.default_rng(0)
    blue = colour_axis(_hue_image(rng, (0.1, 0.3, 1.0)))
    assert blue is not None and np.allclose(blue, np.array([0.1, 0.3, 1.0]) / np.linalg.norm([0.1, 0.3, 1.0]),
                                            atol=1e-3)
    gray = colour_axis(np.repeat(rng.integers(0, 256, (20, 20, 1), dtype=np.uint8), 3, axis=2))
    assert np.allclose(gray, np.ones(3) / np.sqrt(3))
    assert colour_axis(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)) is None  # independent channels


def test_the_styled_image_is_projected_onto_the_style_axis_and_keeps_its_intensity():
    rng = np.random.default_rng(1)
    style = _hue_image(rng, (0.1, 0.3, 0.8))  # below 255 everywhere: no clipping in the comparison below
    styled = np.clip(_hue_image(rng, (0.1, 0.3, 0.8)).astype(int) + rng.integers(-12, 13, (32, 40, 3)), 0, 255
                     ).astype(np.uint8)  # the model's output: the right hue plus a tint in every channel
    assert colour_axis(styled) is None
    kept = keep_colour_axis(styled, style)
    assert colour_axis(kept) is not None and np.allclose(colour_axis(kept), colour_axis(style), atol=1e-2)
    axis = colour_axis(style)
    assert np.abs(kept.reshape(-1, 3) @ axis - styled.reshape(-1, 3) @ axis).max() <= 1.0  # same intensity
    colour_style = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert np.array_equal(keep_colour_axis(styled, colour_style), styled)  # colour images are left alone
