"""Named subsets of a data set: its official split and its stains.

Data sets ship their split as lists of file names: IDCIA has ``train.csv``, ``validation.csv`` and
``test.csv``, one quoted image name per line, beside ``images/<STAIN>/``. :func:`read_split_list`
recognises such a list; the importer stores the split and the stain of every image in the manifest
columns :data:`SPLIT` (values ``train``, ``val``, ``test``) and :data:`STAIN`, which the counting and
style stages select by.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from instlib.data.folder import read_manifest
from instlib.data.images import IMAGE_SUFFIXES
from instlib.data.tables import read_rows
from instlib.errors import DataError

SPLIT, STAIN = "split", "stain"
SPLITS = ("train", "val", "test")
# A split list's file stem (lower case) -> the split it defines.
SPLIT_LIST_STEMS = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
                    "test": "test", "testing": "test"}
# Fluorophores and stains that microscopy file names carry as a ``_<STAIN>_`` part.
STAIN_TOKENS = ("DAPI", "Hoechst", "Cy3", "Cy5", "FITC", "TRITC", "GFP", "RFP", "mCherry")
_IMAGE_FOLDERS = {"images", "image", "imgs", "img"}


def _image_stem(entry: str) -> str:
    """``a.tiff`` and ``a`` both name the image ``a``."""
    entry = entry.strip().strip('"').strip()
    return entry[: -len(Path(entry).suffix)] if Path(entry).suffix.lower() in IMAGE_SUFFIXES else entry


def read_split_list(path: str | Path, image_stems: Iterable[str]) -> tuple[str, list[str]] | None:
    """``(split, names)`` when ``path`` is a split list, else ``None`` (e.g. a points CSV).

    A split list is a one-column CSV named like a split (``train``, ``validation``, ``test``...) whose
    rows name images, with or without their suffix; a header line is allowed. Names of images that
    are not present (a partial copy) are kept: the caller decides.
    """
    path = Path(path)
    split = SPLIT_LIST_STEMS.get(path.stem.lower())
    if split is None:
        return None
    rows = read_rows(path)
    if not rows or any(len([c for c in r if c.strip()]) != 1 for r in rows):
        return None
    entries = [next(c for c in r if c.strip()).strip() for r in rows]
    names, stems = [_image_stem(e) for e in entries], set(image_stems)
    if names[0] not in stems and not Path(entries[0]).suffix:  # a header such as "filename"
        names = names[1:]
    if not names or not any(n in stems for n in names):
        return None
    return split, names


def stain_of(image: Path, root: Path) -> str:
    """The stain of an image: its folder in ``images/<STAIN>/``, else a ``_<STAIN>_`` part of its name."""
    parts = image.relative_to(root).parts
    if len(parts) >= 3 and parts[-3].lower() in _IMAGE_FOLDERS:
        return parts[-2]
    tokens = {t.lower(): t for t in re.split(r"[_\-\s.]+", image.stem)}
    return next((s for s in STAIN_TOKENS if s.lower() in tokens), "")


def assign_splits(lists: Sequence[tuple[Path, str, list[str]]], stems: Iterable[str]) -> dict[str, str]:
    """Image stem -> split from the recognised lists; an image named by two lists is an error."""
    stems, split_of, where = set(stems), {}, {}
    for path, split, names in lists:
        for name in names:
            if name in stems:
                if name in split_of and split_of[name] != split:
                    raise DataError(f"lists '{name}' as {split}, but {where[name].name} lists it as {split_of[name]}",
                                    path)
                split_of[name], where[name] = split, path
    return split_of


def split_names(folder: str | Path) -> dict[str, set[str]]:
    """The folder's official split as ``{"train": names, "val": names, "test": names}``.

    Raises :class:`DataError` when the manifest has no ``split`` column (the data set shipped none).
    """
    manifest = read_manifest(folder)
    if SPLIT not in manifest.columns:
        raise DataError(f"has no official split (no '{SPLIT}' column in its manifest; import a data set "
                        "that ships train/validation/test lists)", folder)
    # Hand-edited manifests may spell the parts as split lists do ("validation", "training").
    column = manifest[SPLIT].str.strip().str.lower().map(SPLIT_LIST_STEMS)
    return {s: set(manifest["name"][column == s]) for s in SPLITS}


def stains_of(folder: str | Path) -> dict[str, str]:
    """Image name to stain, from the manifest's ``stain`` column; a clear error when there is none."""
    folder = Path(folder)
    if not (folder / "manifest.csv").is_file():
        raise DataError("has no manifest.csv, so its images have no stain; select them with a name glob "
                        "(--names) instead", folder)
    manifest = read_manifest(folder)
    if STAIN not in manifest.columns:
        raise DataError(f"has a manifest without a '{STAIN}' column; select its images with a name glob "
                        "(--names) instead", folder / "manifest.csv")
    return dict(zip(manifest["name"], manifest[STAIN]))
