"""The style image's colour model, kept in the styled image.

A fluorescence channel is one intensity; its colour is a display look-up table: gray (IDCIA's 8-bit
TIFFs) or one hue (a DAPI channel shown in blue). The diffusion model redraws R, G and B separately,
so its output holds a little of every colour: a tint that no real image of the set has, and a
give-away for anyone (or any classifier) comparing them. When the style image has a colour axis
(every pixel a multiple of one RGB direction, up to rounding), the styled image is projected onto
it; colour images (several stains in one picture) are left as they are.
"""

from __future__ import annotations

import numpy as np

#: Largest ratio of the second to the first singular value of an image's pixels (an RGB matrix, not
#: centred) for the image to count as one intensity shown in one colour; uint8 rounding gives ~0.003.
AXIS_TOLERANCE = 0.02


def colour_axis(image: np.ndarray, tolerance: float = AXIS_TOLERANCE) -> np.ndarray | None:
    """The unit RGB direction all pixels of ``image`` (``(H, W, 3)``) lie on, or None if they do not."""
    x = image.reshape(-1, 3).astype(np.float64)
    values, vectors = np.linalg.eigh(x.T @ x)  # ascending; singular values are their square roots
    singular = np.sqrt(np.clip(values, 0, None))
    if singular[-1] == 0 or singular[-2] > tolerance * singular[-1]:
        return None
    axis = vectors[:, -1]
    return axis if axis.sum() >= 0 else -axis


def keep_colour_axis(styled: np.ndarray, style: np.ndarray) -> np.ndarray:
    """``styled`` (uint8 ``(H, W, 3)``) projected onto ``style``'s colour axis, when it has one."""
    axis = colour_axis(style)
    if axis is None:
        return styled
    intensity = styled.reshape(-1, 3).astype(np.float64) @ axis
    out = np.clip(np.outer(intensity, axis), 0, 255).round().astype(np.uint8)
    return out.reshape(styled.shape)
