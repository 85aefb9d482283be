"""The folder format every stage reads and writes.

::

    DIR/images/<name>.{png,tif,tiff,jpg}   the images
    DIR/points/<name>.csv                  their points (header ``X,Y``)
    DIR/manifest.csv                       one row per image: name, count, source, seed, ...
    DIR/instlib.json                       which stage wrote the folder, with which settings

Runs split with ``--shard i/n`` write ``manifest.shard-i-of-n.csv`` instead of ``manifest.csv``;
:func:`read_manifest` returns the union.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from instlib.data.atomic import atomic_open, read_json, sweep_temporaries, write_json
from instlib.data.images import IMAGE_SUFFIXES, image_size, is_image_file, read_image
from instlib.data.listing import data_files, junk_files
from instlib.data.points import read_points
from instlib.data.tables import read_table
from instlib.errors import DataError

IMAGES, POINTS, MANIFEST, STAMP = "images", "points", "manifest.csv", "instlib.json"
#: Manifest columns that hold numbers, and True/False flags, as the stages write them. Every other
#: column (name, origin, style, split, stain, source, content, category, resolution: a size or "auto", ...)
#: is text, read as written.
MANIFEST_NUMBERS = ("count", "seed", "base_seed", "height", "width", "cell_size", "strength", "steps", "guidance",
                    "tile_overlap", "fidelity_recall", "fidelity_spurious", "fidelity_blobs",
                    "content_recall", "content_spurious")
MANIFEST_FLAGS = ("adain", "reference_timesteps")


@dataclass(frozen=True)
class Sample:
    """One image of a folder and its points file."""

    name: str
    image: Path
    points: Path

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        """Image as ``float32 (H, W, C)`` and points as ``(N, 2)``, checked to lie inside it."""
        img = read_image(self.image)
        return img, read_points(self.points, shape=img.shape[:2])

    def count(self) -> int:
        """Number of annotated cells (from the points, never from the pixels)."""
        return len(read_points(self.points))


def _pairing(root: Path) -> tuple[dict[str, Path], dict[str, Path], list[DataError]]:
    problems: list[DataError] = []
    if not root.is_dir():
        raise DataError("no such folder", root)
    img_dir, pts_dir = root / IMAGES, root / POINTS
    if not img_dir.is_dir():
        raise DataError(f"has no '{IMAGES}/' subfolder; expected {IMAGES}/<name>.png and {POINTS}/<name>.csv", root)
    images: dict[str, Path] = {}
    for p in data_files(img_dir):
        if p.is_dir():
            problems.append(DataError(f"is a folder, but {IMAGES}/ holds image files only; for a data set as "
                                      "shipped (e.g. images/<STAIN>/) run 'instlib data import' first", p))
        elif not is_image_file(p):
            problems.append(DataError(f"is not an image file (supported: {', '.join(IMAGE_SUFFIXES)})", p))
        elif p.stem in images:
            problems.append(DataError(f"has the same name as {images[p.stem].name}; names must be unique", p))
        else:
            images[p.stem] = p
    points: dict[str, Path] = {}
    if pts_dir.is_dir():
        for p in data_files(pts_dir):
            if p.suffix.lower() != ".csv":
                problems.append(DataError("is not a .csv points file", p))
            else:
                points[p.stem] = p
    for name in sorted(set(images) - set(points)):
        problems.append(DataError(f"has no points file {POINTS}/{name}.csv", images[name]))
    for name in sorted(set(points) - set(images)):
        problems.append(DataError(f"has no image {IMAGES}/{name}.* beside it", points[name]))
    if not images and not points:
        problems.append(DataError(f"is empty: no images in {IMAGES}/", root))
    return images, points, problems


def list_samples(root: str | Path) -> list[Sample]:
    """All samples of a folder, sorted by name. Raises on any pairing problem (first one named)."""
    root = Path(root)
    images, points, problems = _pairing(root)
    _raise_first(problems, root)
    return [Sample(n, images[n], points[n]) for n in sorted(images)]


def _raise_first(problems: list[DataError], root: Path) -> None:
    if problems:
        more = f" (and {len(problems) - 1} more; run 'instlib data check {root}')" if len(problems) > 1 else ""
        raise DataError(problems[0].message + more, problems[0].path)


def check_folder(root: str | Path) -> list[DataError]:
    """Every problem of a folder: pairing, unreadable images, bad CSVs, points outside, manifest mismatch."""
    root = Path(root)
    try:
        images, points, problems = _pairing(root)
    except DataError as exc:
        return [exc]
    counts: dict[str, int] = {}
    for name in sorted(set(images) & set(points)):
        try:
            shape = image_size(images[name])
            read_image(images[name])  # full decode: catches truncation that the header hides
            counts[name] = len(read_points(points[name], shape=shape))
        except DataError as exc:
            problems.append(exc)
    if _manifest_files(root):
        try:
            manifest = read_manifest(root)
        except DataError as exc:
            problems.append(exc)
        else:
            listed = dict(zip(manifest["name"], manifest["count"]))
            for name in sorted(set(listed) - set(images)):
                problems.append(DataError(f"lists '{name}', which has no image", root / MANIFEST))
            for name, n in sorted(counts.items()):
                if name in listed and int(listed[name]) != n:
                    problems.append(DataError(f"says '{name}' has {listed[name]} cells; its points file has {n}",
                                              root / MANIFEST))
    return problems


def ignored_files(root: str | Path) -> list[Path]:
    """Hidden and operating-system files in a folder's ``images/`` and ``points/`` (skipped, not data)."""
    return [p for part in (IMAGES, POINTS) if (Path(root) / part).is_dir() for p in junk_files(Path(root) / part)]


def _manifest_files(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("manifest*.csv") if p.name == MANIFEST or p.name.startswith("manifest.shard-"))


def manifest_name(shard: tuple[int, int] | None = None) -> str:
    """``manifest.csv``, or ``manifest.shard-i-of-n.csv`` for shard ``(i, n)``."""
    return MANIFEST if shard is None else f"manifest.shard-{shard[0]}-of-{shard[1]}.csv"


def write_manifest(root: str | Path, rows: list[dict] | pd.DataFrame, shard: tuple[int, int] | None = None) -> Path:
    """Write the manifest (sorted by name) atomically. Rows need at least ``name`` and ``count``.

    A whole (unsharded) manifest means no other process writes into the folder, so the temporary
    files that killed runs left there are removed.
    """
    df = pd.DataFrame(rows)
    missing = {"name", "count"} - set(df.columns)
    if missing:
        raise ValueError(f"manifest rows lack {sorted(missing)}")
    df = df.sort_values("name", kind="stable").reset_index(drop=True)
    path = Path(root) / manifest_name(shard)
    with atomic_open(path, "w", newline="") as fh:
        df.to_csv(fh, index=False)
    if shard is None:
        for folder in (Path(root), Path(root) / IMAGES, Path(root) / POINTS):
            sweep_temporaries(folder)
    return path


def read_manifest_file(path: str | Path) -> pd.DataFrame:
    """One manifest file: text columns, :data:`MANIFEST_NUMBERS` and :data:`MANIFEST_FLAGS` converted.

    Raises :class:`DataError` unless it has ``name`` and ``count`` and every row gives a count.
    """
    path = Path(path)
    df = read_table(path, numbers=MANIFEST_NUMBERS, flags=MANIFEST_FLAGS)
    if not {"name", "count"} <= set(df.columns):
        raise DataError(f"has columns {list(df.columns)}; a manifest needs 'name' and 'count'", path)
    uncounted = df["name"][df["count"].isna()]
    if len(uncounted):
        raise DataError(f"gives no count for '{uncounted.iloc[0]}'", path)
    return df


def read_manifest(root: str | Path) -> pd.DataFrame:
    """The folder's manifest (all shards together, see :func:`read_manifest_file`), sorted by name."""
    root = Path(root)
    files = _manifest_files(root)
    if not files:
        raise DataError(f"has no {MANIFEST}", root)
    df = pd.concat([read_manifest_file(f) for f in files], ignore_index=True)
    # A text column that only some shards have: its cells in the others are empty, not NaN.
    text = [c for c in df.columns if c not in (*MANIFEST_NUMBERS, *MANIFEST_FLAGS)]
    df[text] = df[text].fillna("")
    dupes = df["name"][df["name"].duplicated()]
    if len(dupes):
        raise DataError(f"lists '{dupes.iloc[0]}' more than once across {[f.name for f in files]}", root)
    return df.sort_values("name", kind="stable").reset_index(drop=True)


def prepare_output(out: str | Path, stage: str, settings: dict, overwrite: bool = False) -> Path:
    """Make ``out`` ready for a stage's results, refusing to mix them with different data.

    ``out`` may be absent or empty (created), hold the same stage with the same ``settings``
    (kept: the caller resumes and skips finished images), or hold anything else, which is refused
    unless ``overwrite`` (then the folder-format parts, and only those, are removed first).
    Settings must be JSON-serialisable; they are recorded in ``out/instlib.json``.
    """
    out = Path(out)
    stamp = {"stage": stage, "settings": settings}
    if out.exists() and not out.is_dir():
        raise DataError("exists and is not a folder", out)
    existing = data_files(out) if out.is_dir() else []
    if existing:
        previous = read_json(out / STAMP) or {}
        if previous != json.loads(json.dumps(stamp)):
            if not overwrite:
                what = (f"results of '{previous.get('stage')}' with other settings" if previous
                        else "files that instlib did not write")
                raise DataError(f"already holds {what}; choose another --out or pass --overwrite", out)
            for part in (out / IMAGES, out / POINTS):
                shutil.rmtree(part, ignore_errors=True)
            for f in [*_manifest_files(out), out / STAMP]:
                f.unlink(missing_ok=True)
    try:
        (out / IMAGES).mkdir(parents=True, exist_ok=True)
        (out / POINTS).mkdir(exist_ok=True)
        write_json(out / STAMP, stamp)
    except PermissionError as exc:
        raise DataError("is not writable (permission denied)", exc.filename or out) from exc
    except OSError as exc:
        raise DataError(f"cannot be written: {exc.strerror}", exc.filename or out) from exc
    if not os.access(out / IMAGES, os.W_OK):
        raise DataError("is not writable (permission denied)", out / IMAGES)
    return out


def validate_folder(root: str | Path) -> list[Sample]:
    """:func:`list_samples`, after a full :func:`check_folder`; raises naming the first problem."""
    _raise_first(check_folder(root), Path(root))
    return list_samples(root)
