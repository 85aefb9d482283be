"""Reading and writing microscopy images in one array convention.

Every reader returns ``float32`` arrays of shape ``(H, W, C)`` with values in ``[0, 1]`` and
``C`` = 1 (grayscale) or 3 (colour). 8- and 16-bit integers are divided by their type's maximum
(255 or 65535); alpha channels are dropped; channel-first TIFFs ``(C, H, W)`` are transposed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from instlib.data.atomic import atomic_path
from instlib.errors import DataError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


def is_image_file(path: Path) -> bool:
    """True for a visible file with one of the supported image suffixes."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES


def _decode(path: Path) -> np.ndarray:
    if path.suffix.lower() in (".tif", ".tiff"):
        with tifffile.TiffFile(path) as tif:
            if len(tif.series) != 1 or len(tif.series[0].shape) > 3:
                raise DataError(f"holds {len(tif.pages)} pages / shape {tif.series[0].shape}; "
                                "expected one 2-D image (gray, RGB or RGBA)", path)
            arr, axes = tif.asarray(), tif.series[0].axes
            # Channel-first microscopy TIFFs (axes 'CYX', 'SYX', ...) become channel-last.
            return np.moveaxis(arr, 0, -1) if arr.ndim == 3 and axes[-1] != "S" and axes[0] in "CSQI" else arr
    with Image.open(path) as im:
        im.load()  # PIL decodes lazily: force it so truncated files fail here
        if im.mode in ("P", "LA", "PA", "CMYK", "YCbCr", "HSV"):
            im = im.convert("RGBA" if "A" in im.mode or im.mode == "P" else "RGB")
        return np.asarray(im)


def read_image(path: str | Path) -> np.ndarray:
    """Read a PNG/TIFF/JPEG into ``float32 (H, W, C)`` in ``[0, 1]`` (see module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such image file", path)
    try:
        arr = _decode(path)
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, tifffile.TiffFileError) as exc:
        raise DataError(f"cannot be decoded as an image (corrupt or truncated?): {exc}", path) from exc
    return _to_float_hwc(arr, path)


def _to_float_hwc(arr: np.ndarray, path: Path) -> np.ndarray:
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[-1] not in (1, 2, 3, 4):
        raise DataError(f"has shape {arr.shape}; expected (H, W), (H, W, 3) or (H, W, 4)", path)
    if arr.shape[-1] in (2, 4):  # drop alpha
        arr = arr[..., :-1]
    if arr.dtype == np.bool_:
        arr = arr.astype(np.uint8)
    if np.issubdtype(arr.dtype, np.integer):
        out = arr.astype(np.float32) / np.float32(np.iinfo(arr.dtype).max)
    else:
        out = arr.astype(np.float32)
        peak = float(np.nanmax(out)) if out.size else 0.0
        if not np.isfinite(out).all():
            raise DataError("holds NaN or infinite pixel values", path)
        if peak > 1.0:  # floating-point TIFF in arbitrary units: scale into [0, 1]
            out = out / np.float32(peak)
        out = np.clip(out, 0.0, 1.0)
    if out.shape[0] == 0 or out.shape[1] == 0:
        raise DataError(f"is empty (shape {arr.shape})", path)
    return np.ascontiguousarray(out)


def image_size(path: str | Path) -> tuple[int, int]:
    """``(H, W)`` of an image without decoding the pixels where the format allows it."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            with tifffile.TiffFile(path) as tif:
                shape, axes = tif.series[0].shape, tif.series[0].axes
                return (int(shape[-2]), int(shape[-1])) if axes[-1] == "X" else (int(shape[0]), int(shape[1]))
        with Image.open(path) as im:
            return im.height, im.width
    except (OSError, ValueError, SyntaxError, UnidentifiedImageError, tifffile.TiffFileError) as exc:
        raise DataError(f"cannot be read as an image: {exc}", path) from exc


def to_uint8(img: np.ndarray) -> np.ndarray:
    """``[0, 1]`` floats to ``uint8`` with rounding (uint8 input is returned unchanged)."""
    if img.dtype == np.uint8:
        return img
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def to_rgb(img: np.ndarray) -> np.ndarray:
    """``(H, W, 1)`` or ``(H, W)`` to ``(H, W, 3)`` by repeating the channel; RGB unchanged."""
    if img.ndim == 2:
        img = img[..., None]
    return np.repeat(img, 3, axis=-1) if img.shape[-1] == 1 else img


def to_gray(img: np.ndarray) -> np.ndarray:
    """``(H, W, C)`` to ``(H, W, 1)`` (ITU-R 601 luma for colour)."""
    if img.ndim == 2:
        return img[..., None]
    if img.shape[-1] == 1:
        return img
    weights = np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return (img[..., :3] @ weights)[..., None].astype(img.dtype)


def write_image(path: str | Path, img: np.ndarray) -> Path:
    """Write ``img`` atomically. PNG/JPEG are 8-bit; TIFF keeps uint16 input as 16-bit.

    ``img`` is ``uint8``, ``uint16`` (TIFF only) or float in ``[0, 1]``; ``(H, W)``, ``(H, W, 1)``
    or ``(H, W, 3)``. Single-channel images are written as single-channel files.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in IMAGE_SUFFIXES:
        raise DataError(f"unsupported image suffix {path.suffix!r}; use one of {', '.join(IMAGE_SUFFIXES)}", path)
    if img.ndim == 3 and img.shape[-1] == 1:
        img = img[..., 0]
    if not (suffix in (".tif", ".tiff") and img.dtype == np.uint16):
        img = to_uint8(img)
    with atomic_path(path) as tmp:
        if suffix in (".tif", ".tiff"):
            tifffile.imwrite(tmp, img, photometric="rgb" if img.ndim == 3 else "minisblack")
        else:
            Image.fromarray(img).save(tmp, format="JPEG" if suffix in (".jpg", ".jpeg") else "PNG",
                                      **({"quality": 95} if suffix in (".jpg", ".jpeg") else {}))
    return path
