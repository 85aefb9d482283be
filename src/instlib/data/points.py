"""Point annotations: one CSV per image with header ``X,Y`` (X = column, Y = row, pixels).

A header-only CSV means the image has no cells. Points are returned as ``float64 (N, 2)`` arrays
in ``(X, Y)`` order. A point belongs to pixel ``(row, col) = (floor(Y), floor(X))``, so valid
points satisfy ``0 <= X < W`` and ``0 <= Y < H``.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np

from instlib.data.atomic import atomic_open
from instlib.errors import DataError


def read_points(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a points CSV; with ``shape=(H, W)`` also check that every point lies in the image."""
    path = Path(path)
    if not path.is_file():
        raise DataError("no such points file", path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot be read as a UTF-8 CSV: {exc}", path) from exc
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise DataError("is empty; a points CSV needs at least the header line 'X,Y'", path)
    header = [cell.strip().upper() for cell in rows[0]]
    if "X" not in header or "Y" not in header:
        raise DataError(f"has columns {rows[0]}; expected columns 'X' and 'Y'", path)
    ix, iy = header.index("X"), header.index("Y")
    pts = []
    for lineno, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        try:
            x, y = float(row[ix]), float(row[iy])
        except (ValueError, IndexError) as exc:
            raise DataError(f"line {lineno}: non-numeric or missing coordinate in {row}", path) from exc
        if not (np.isfinite(x) and np.isfinite(y)):
            raise DataError(f"line {lineno}: coordinate is NaN or infinite ({row})", path)
        pts.append((x, y))
    points = np.asarray(pts, dtype=np.float64).reshape(-1, 2)
    if shape is not None:
        check_points_inside(points, shape, path)
    return points


def check_points_inside(points: np.ndarray, shape: tuple[int, int], path: str | Path) -> None:
    """Raise :class:`DataError` if any point falls outside an image of ``shape=(H, W)``."""
    h, w = shape
    outside = ~((points[:, 0] >= 0) & (points[:, 0] < w) & (points[:, 1] >= 0) & (points[:, 1] < h))
    if outside.any():
        first = points[np.argmax(outside)]
        raise DataError(f"{int(outside.sum())} of {len(points)} points lie outside the {h}x{w} image "
                        f"(first: X={first[0]:g}, Y={first[1]:g}); valid range is 0<=X<{w}, 0<=Y<{h}", path)


def write_points(path: str | Path, points: np.ndarray) -> Path:
    """Write ``(N, 2)`` ``(X, Y)`` points atomically; floats keep full precision (``repr``)."""
    points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    with atomic_open(path, "w", newline="") as fh:
        fh.write("X,Y\n")
        for x, y in points:
            fh.write(f"{_fmt(x)},{_fmt(y)}\n")
    return Path(path)


def _fmt(v: float) -> str:
    return str(int(v)) if float(v).is_integer() else repr(float(v))
