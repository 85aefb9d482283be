"""Pixels in and out of the networks: RGB uint8 arrays, resizes, ``[-1, 1]`` tensors.

Microscopy images come in any bit depth and channel count (see :mod:`instlib.data.images`); the
networks see 8-bit RGB, as SD was trained on, resized with PIL as the reference does.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from instlib.data.folder import IMAGES
from instlib.data.images import IMAGE_SUFFIXES, is_image_file, read_image, to_rgb, to_uint8
from instlib.data.listing import is_junk
from instlib.errors import DataError


def list_images(folder: str | Path) -> dict[str, Path]:
    """Images of a folder (its ``images/`` subfolder if it has one) by stem; other files are errors."""
    folder = Path(folder)
    folder = folder / IMAGES if (folder / IMAGES).is_dir() else folder
    files: dict[str, Path] = {}
    for p in sorted(folder.iterdir()):
        if is_junk(p) or p.is_dir():
            continue
        if not is_image_file(p):
            raise DataError(f"is not an image file (supported: {', '.join(IMAGE_SUFFIXES)})", p)
        if p.stem in files:
            raise DataError(f"has the same name as {files[p.stem].name}; image names must be unique", p)
        files[p.stem] = p
    return files


def load_rgb(path: str | Path) -> np.ndarray:
    """Any supported image file as ``uint8 (H, W, 3)``."""
    return to_uint8(to_rgb(read_image(path)))


def center_square(img: np.ndarray) -> np.ndarray:
    """The largest centred square of ``img`` (the optional ``center-crop`` training geometry; the reference's
    data loader does not crop, it resizes the whole image)."""
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return img[top:top + side, left:left + side]


def resize(img: np.ndarray, size: tuple[int, int], resample: Image.Resampling = Image.Resampling.LANCZOS) -> np.ndarray:
    """``uint8 (H, W, 3)`` resized to ``size = (h, w)`` (Lanczos by default, as the reference's transfer)."""
    if img.shape[:2] == tuple(size):
        return img
    return np.array(Image.fromarray(img).resize((size[1], size[0]), resample=resample))  # writable copy


def to_pixels(images: list[np.ndarray], device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Equal-sized ``uint8 (H, W, 3)`` images to a ``(B, 3, H, W)`` tensor in ``[-1, 1]``."""
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1.0
    return x.to(device, dtype)


def from_pixels(x: torch.Tensor) -> list[np.ndarray]:
    """A ``(B, 3, H, W)`` tensor in ``[0, 1]`` to ``uint8 (H, W, 3)`` images (rounded)."""
    arr = x.detach().float().clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy()
    return [to_uint8(a) for a in arr]
