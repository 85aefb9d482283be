"""Public datasets: download with checksums (pooch) and convert to the folder format.

- ``idcia``: IDCIA, Immunocytochemistry Dataset for Cellular Image Analysis (figshare article
  21970604): fluorescence images of rat adult hippocampal progenitor cells with one ``X,Y`` CSV
  per image. Each file is verified against the MD5 that figshare publishes for it.
- Cell-200 (the paper's Cell200-s baseline) has no stable public address; convert a local copy with
  ``instlib data import`` (``--format dots`` for image + dot-annotation PNG pairs).
"""

from __future__ import annotations

import json
import shutil
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pooch
from tqdm.auto import tqdm

from instlib.data.atomic import atomic_path
from instlib.data.checksums import CHECKSUMS, checksum_table, read_table, verify, write_table
from instlib.data.folder import IMAGES, POINTS, prepare_output, read_manifest, write_manifest
from instlib.data.images import IMAGE_SUFFIXES, read_image
from instlib.data.listing import walk_data_files
from instlib.data.points import read_points, write_points
from instlib.data.subsets import SPLIT, STAIN, assign_splits, read_split_list, stain_of
from instlib.errors import DataError, InstlibError

TIMEOUT_S = 10


@dataclass(frozen=True)
class FigshareDataset:
    """A dataset published as one figshare article."""

    name: str
    article: int
    page: str
    citation: str


DATASETS = {
    "idcia": FigshareDataset(
        name="IDCIA", article=21970604,
        page="https://figshare.com/articles/dataset/21970604",
        citation="Mohammed et al., IDCIA: Immunocytochemistry Dataset for Cellular Image Analysis, MMSys 2023"),
}


def _manual_hint(ds: FigshareDataset, dest: Path) -> str:
    return (f"download {ds.name} by hand from {ds.page}, unpack it, then run "
            f"'instlib data import UNPACKED_FOLDER --dest {dest}'")


def _list_files(ds: FigshareDataset, dest: Path) -> list[dict]:
    url = f"https://api.figshare.com/v2/articles/{ds.article}/files"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as resp:
            return json.load(resp)
    except (urllib.error.URLError, TimeoutError, OSError, json.JSONDecodeError) as exc:
        raise InstlibError(f"cannot reach figshare to fetch {ds.name} ({exc}); offline, "
                           + _manual_hint(ds, dest)) from exc


def fetch(dataset: str, dest: str | Path, cache: str | Path | None = None, overwrite: bool = False) -> Path:
    """Download ``dataset`` (see :data:`DATASETS`) into the cache and write it to ``dest`` in the folder format."""
    if dataset not in DATASETS:
        raise InstlibError(f"unknown dataset {dataset!r}; available: {', '.join(sorted(DATASETS))}")
    ds, dest = DATASETS[dataset], Path(dest)
    files = _list_files(ds, dest)
    cache = Path(cache) if cache else Path(pooch.os_cache("instlib")) / dataset
    for f in files:  # zips are unpacked beside themselves; import_folder then searches the whole cache
        processor = pooch.Unzip() if f["name"].lower().endswith(".zip") else None
        pooch.retrieve(f["download_url"], known_hash=f"md5:{f['computed_md5']}", fname=f["name"],
                       path=cache, processor=processor, progressbar=True)
    return import_folder(cache, dest, source=dataset, overwrite=overwrite)


@dataclass
class _Found:
    """What a source folder holds: images and CSVs by stem, and the split lists among the CSVs."""

    images: dict[str, Path]
    tables: dict[str, Path]
    lists: list[tuple[Path, str, list[str]]]


def _find(src: Path) -> _Found:
    images: dict[str, Path] = {}
    csvs: list[Path] = []
    for p in walk_data_files(src):
        if p.suffix.lower() in IMAGE_SUFFIXES:
            if p.stem in images:
                raise DataError(f"has the same name as {images[p.stem]}; image names must be unique", p)
            images[p.stem] = p
        elif p.suffix.lower() == ".csv" and not p.name.startswith("manifest"):
            csvs.append(p)
    tables: dict[str, Path] = {}
    lists = []
    for p in csvs:
        found = read_split_list(p, images)
        if found is not None:
            lists.append((p, *found))
        elif p.stem in tables:
            raise DataError(f"has the same name as {tables[p.stem]}; annotation names must be unique", p)
        else:
            tables[p.stem] = p
    return _Found(images, tables, lists)


def _pairs(found: _Found, fmt: str, src: Path) -> dict[str, tuple[Path, Path]]:
    images, tables = found.images, found.tables
    if fmt == "dots":
        return {s[: -len("cell")]: (p, images[s[: -len("cell")] + "dots"]) for s, p in images.items()
                if s.endswith("cell") and s[: -len("cell")] + "dots" in images}
    if fmt != "csv":
        raise InstlibError(f"unknown import format {fmt!r}; choose 'csv' or 'dots'")
    unpaired = sorted(set(images) ^ set(tables))
    if unpaired:
        first = unpaired[0]
        what = f"image {images[first]} has no {first}.csv" if first in images else f"{tables[first]} has no image"
        raise DataError(f"{len(unpaired)} unpaired files, e.g. {what}", src)
    return {s: (images[s], tables[s]) for s in images}


def import_folder(src: str | Path, dest: str | Path, source: str = "imported", fmt: str = "csv",
                  overwrite: bool = False, pin: str | Path | None = None, progress: bool = True) -> Path:
    """Convert images + annotations found anywhere under ``src`` to the folder format at ``dest``.

    ``fmt="csv"``: each image pairs with the ``<same stem>.csv`` of ``X,Y`` points (IDCIA's layout,
    ImageJ exports included). Split lists (``train.csv``, ``validation.csv``, ``test.csv`` naming
    images) fill the manifest's ``split`` column; ``images/<STAIN>/`` folders or ``_<STAIN>_`` name
    parts fill its ``stain`` column.
    ``fmt="dots"``: ``<id>cell.png`` pairs with ``<id>dots.png`` whose non-zero pixels mark the cells
    (the layout of the VGG synthetic-cell images from which Cell-200 was made).
    Images are copied byte for byte; points are validated and rewritten. The SHA-256 of every file
    read goes to ``dest/checksums.sha256``; with ``pin`` (such a file) any other source is refused.
    """
    src, dest = Path(src), Path(dest)
    if not src.is_dir():
        raise DataError("no such folder", src)
    found = _find(src)
    pairs = _pairs(found, fmt, src)
    if not pairs:
        raise DataError(f"holds no image/annotation pairs in the '{fmt}' layout", src)
    used = [p for pair in pairs.values() for p in pair] + [path for path, _, _ in found.lists]
    table = checksum_table(src, used)
    if pin is not None:
        verify(table, read_table(pin), src, pin)
    split_of = assign_splits(found.lists, pairs)
    stains = {name: stain_of(img_path, src) for name, (img_path, _) in pairs.items()}
    labels = ({SPLIT: split_of} if found.lists else {}) | ({STAIN: stains} if any(stains.values()) else {})
    converted = {}
    for name, (img_path, ann) in tqdm(sorted(pairs.items()), desc=f"checking {src}", disable=not progress):
        shape = read_image(img_path).shape[:2]  # a full decode also catches truncated files
        if fmt == "dots":
            dots = read_image(ann).max(axis=-1)
            rows, cols = np.nonzero(dots > 0)
            converted[name] = np.stack([cols + 0.5, rows + 0.5], axis=1)
        else:
            converted[name] = read_points(ann, shape=shape)
    out = prepare_output(dest, "import", {"src": str(src.resolve()), "format": fmt, "source": source}, overwrite)
    rows = []
    for name, pts in tqdm(converted.items(), desc=f"importing -> {out}", disable=not progress):
        img_path = pairs[name][0]
        with atomic_path(out / IMAGES / f"{name}{img_path.suffix.lower()}") as tmp:
            shutil.copyfile(img_path, tmp)
        write_points(out / POINTS / f"{name}.csv", pts)
        rows.append({"name": name, "count": len(pts), "source": source, "seed": "", "original": str(img_path),
                     **{column: values.get(name, "") for column, values in labels.items()}})
    write_table(out / CHECKSUMS, table)
    write_manifest(out, rows)
    return out


def shipped_split(folder: str | Path) -> dict[str, str]:
    """Image name -> official split (``train``/``val``/``test``) of a folder, empty when it has none.

    Works on a folder-format folder (its manifest's ``split`` column) and on a data set as shipped
    (its split lists, as :func:`import_folder` reads them).
    """
    folder = Path(folder)
    if (folder / POINTS).is_dir():
        try:
            manifest = read_manifest(folder)
        except DataError:  # no manifest: nothing says how it was split
            return {}
        if SPLIT not in manifest.columns:
            return {}
        return {n: s for n, s in zip(manifest["name"], manifest[SPLIT]) if s}
    if not folder.is_dir():
        raise DataError("no such folder", folder)
    found = _find(folder)
    return assign_splits(found.lists, found.images)
