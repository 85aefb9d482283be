"""Public datasets: download, checked against checksums committed with instlib, and conversion to the folder format.

- ``idcia``: IDCIA, Immunocytochemistry Dataset for Cellular Image Analysis (figshare article
  21970604): fluorescence images of rat adult hippocampal progenitor cells with one ``X,Y`` CSV
  per image. The download takes one pinned version of the article, lists its files page by page
  (figshare's listing has 10 files a page unless asked for more), and accepts exactly the files,
  with exactly the MD5s, of the table ``idcia.md5`` beside this module. Figshare's own MD5s come in
  the same answer as the download addresses, so they cannot tell a changed article from the one
  instlib was made for; the committed table can.
- Cell-200 (the paper's Cell200-s baseline) has no stable public address; convert a local copy with
  ``instlib data import`` (``--format dots`` for image + dot-annotation PNG pairs).

Every failure of the download (no network, HTTP 403, figshare's empty HTTP 202 challenge page, a
file or MD5 the table does not pin) is an :class:`~instlib.errors.InstlibError` that names the URL
and says how to get the data by hand; a file is renamed into the cache only once its MD5 matches,
so nothing partial is left behind.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from itertools import count
from pathlib import Path

import numpy as np
import pooch
from tqdm.auto import tqdm

from instlib import __version__
from instlib.data.atomic import atomic_path
from instlib.data.checksums import CHECKSUMS, checksum_table, file_digest, read_table, verify, write_table
from instlib.data.folder import IMAGES, POINTS, prepare_output, read_manifest, write_manifest
from instlib.data.images import IMAGE_SUFFIXES, read_image
from instlib.data.listing import walk_data_files
from instlib.data.points import read_points, write_points
from instlib.data.subsets import SPLIT, STAIN, assign_splits, read_split_list, stain_of
from instlib.errors import DataError, InstlibError

API = "https://api.figshare.com/v2"
TIMEOUT_S = 10
#: Files per page of figshare's file listing (its default is 10, its maximum 1000).
PAGE_SIZE = 100
CHUNK = 1 << 20


@dataclass(frozen=True)
class FigshareDataset:
    """One version of a dataset published as a figshare article, and the MD5 table that pins its files."""

    name: str
    article: int
    version: int
    table: Path
    page: str
    citation: str

    @property
    def files_url(self) -> str:
        """The API address that lists the files of this version."""
        return f"{API}/articles/{self.article}/versions/{self.version}/files"


DATASETS = {
    "idcia": FigshareDataset(
        name="IDCIA", article=21970604, version=1, table=Path(str(resources.files("instlib.data") / "idcia.md5")),
        page="https://figshare.com/articles/dataset/Dataset/21970604",  # as the IDCIA paper (arXiv 2411.08992) cites it
        citation="Mohammed et al., IDCIA: Immunocytochemistry Dataset for Cellular Image Analysis, MMSys 2023"),
}


def _manual_hint(ds: FigshareDataset, dest: Path) -> str:
    return (f"download version {ds.version} of {ds.name} by hand from {ds.page} (in a browser), unpack it, "
            f"then run 'instlib data import UNPACKED_FOLDER --dest {dest}'")


def _open(url: str, ds: FigshareDataset, dest: Path) -> http.client.HTTPResponse:
    """The answer to a GET of ``url``; anything but HTTP 200 is an error naming the URL."""
    request = urllib.request.Request(url, headers={"User-Agent": f"instlib/{__version__}"})
    try:
        resp = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        firewall = " (figshare's firewall refuses some networks and clients)" if exc.code == 403 else ""
        raise InstlibError(f"{url}: figshare answered HTTP {exc.code} {exc.reason}{firewall}; "
                           + _manual_hint(ds, dest)) from exc
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise InstlibError(f"{url}: cannot be reached ({reason}); offline, " + _manual_hint(ds, dest)) from exc
    if resp.status != 200:  # figshare's firewall answers some clients with an empty 202 challenge page
        resp.close()
        raise InstlibError(f"{url}: figshare answered HTTP {resp.status} with a challenge page of its firewall "
                           "instead of the data; " + _manual_hint(ds, dest))
    return resp


def _page(url: str, ds: FigshareDataset, dest: Path) -> list[dict]:
    with _open(url, ds, dest) as resp:
        body = resp.read()
    try:
        files = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError):
        files = None
    if not isinstance(files, list) or not all(
            isinstance(f, dict) and {"name", "download_url", "computed_md5"} <= f.keys() for f in files):
        what = "an empty page" if not body.strip() else "something other than figshare's list of files"
        raise InstlibError(f"{url}: figshare answered {what}; " + _manual_hint(ds, dest))
    return files


def _list_files(ds: FigshareDataset, dest: Path) -> list[dict]:
    """Every file of the pinned version, page after page until a page is short or empty."""
    files: dict[str, dict] = {}
    for page in count(1):
        url = f"{ds.files_url}?page={page}&page_size={PAGE_SIZE}"
        batch = _page(url, ds, dest)
        for f in batch:  # a name twice would also be a server that ignores 'page': never loop for ever
            if f["name"] in files:
                raise InstlibError(f"{url}: lists '{f['name']}' a second time; " + _manual_hint(ds, dest))
            files[f["name"]] = f
        if len(batch) < PAGE_SIZE:
            return list(files.values())


def _check_listing(files: list[dict], pinned: dict[str, str], ds: FigshareDataset, dest: Path) -> None:
    """The listing must hold exactly the pinned files, with the pinned MD5s, before anything is downloaded."""
    listed = {f["name"]: f["computed_md5"] for f in files}
    for name, md5 in listed.items():
        if name not in pinned:
            raise InstlibError(f"{ds.files_url}: lists '{name}' (MD5 {md5}), which instlib's checksum table "
                               f"{ds.table} does not pin: the article changed, or the table is not filled in yet "
                               "(see its header; while it is empty, --trust-listing accepts figshare's MD5s); "
                               + _manual_hint(ds, dest))
        if md5 != pinned[name]:
            raise InstlibError(f"{ds.files_url}: gives '{name}' the MD5 {md5}, but {ds.table} pins {pinned[name]}: "
                               "the file changed on figshare; " + _manual_hint(ds, dest))
    missing = sorted(set(pinned) - set(listed))
    if missing:
        raise InstlibError(f"{ds.files_url}: does not list '{missing[0]}', which {ds.table} pins; "
                           + _manual_hint(ds, dest))


def _blocks(resp: http.client.HTTPResponse, url: str) -> Iterator[bytes]:
    """The body in chunks; a connection that breaks off is an error naming the URL (not a write error)."""
    while True:
        try:
            block = resp.read(CHUNK)
        except (OSError, http.client.HTTPException) as exc:
            raise InstlibError(f"{url}: the download broke off ({exc}); run the same command again") from exc
        if not block:
            return
        yield block


def _download(f: dict, target: Path, md5: str, ds: FigshareDataset, dest: Path) -> bool:
    """Download ``f`` to ``target`` unless a copy with the pinned MD5 is there; True when it downloaded."""
    if target.is_file() and file_digest(target, "md5") == md5:
        return False
    url = f["download_url"]
    with _open(url, ds, dest) as resp, atomic_path(target) as tmp, open(tmp, "wb") as fh, \
            tqdm(total=f.get("size"), unit="B", unit_scale=True, desc=f"download {f['name']}") as bar:
        digest = hashlib.md5()
        for block in _blocks(resp, url):
            digest.update(block)
            fh.write(block)
            bar.update(len(block))
        if digest.hexdigest() != md5:  # raised inside atomic_path: the temporary file is removed
            raise InstlibError(f"{url}: the downloaded '{f['name']}' has MD5 {digest.hexdigest()}, but {ds.table} "
                               f"pins {md5}; nothing was kept. Run the same command again, or "
                               + _manual_hint(ds, dest))
    return True


def _unzip(archive: Path) -> None:
    """Unpack ``archive`` into ``<archive>.unzip/``, replacing an earlier unpacking only once complete."""
    target = archive.with_name(archive.name + ".unzip")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=archive.parent))  # hidden: imports skip it
    try:
        with zipfile.ZipFile(archive) as zf:
            zf.extractall(tmp)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _pins(ds: FigshareDataset, files: list[dict], cache: Path, trust_listing: bool) -> dict[str, str]:
    """The MD5 of every file to accept: the committed table's; with ``trust_listing`` and a table that pins
    nothing yet, the listing's own, written to ``cache/<table name>`` for the user to check and commit."""
    pinned = read_table(ds.table, "md5")
    if pinned or not trust_listing:
        return pinned
    listed = {f["name"]: f["computed_md5"] for f in files}
    cache.mkdir(parents=True, exist_ok=True)
    write_table(cache / ds.table.name, listed)
    print(f"note: {ds.table} pins no file yet; accepting the MD5s figshare lists (--trust-listing). They are "
          f"in {cache / ds.table.name}: compare them with the article's page, then commit them as {ds.table}",
          file=sys.stderr)
    return listed


def fetch(dataset: str, dest: str | Path, cache: str | Path | None = None, overwrite: bool = False,
          trust_listing: bool = False) -> Path:
    """Download ``dataset`` (see :data:`DATASETS`) into the cache and write it to ``dest`` in the folder format.

    Files already in the cache with their pinned MD5 are not downloaded again; zip files are
    unpacked beside themselves (``<name>.unzip/``) and the whole cache is imported. ``trust_listing``
    only matters while the committed table pins nothing: the MD5s of figshare's listing are accepted
    instead (and written to the cache, to be pinned); a table with entries is always enforced.
    """
    if dataset not in DATASETS:
        raise InstlibError(f"unknown dataset {dataset!r}; available: {', '.join(sorted(DATASETS))}")
    ds, dest = DATASETS[dataset], Path(dest)
    cache = Path(cache) if cache else Path(pooch.os_cache("instlib")) / dataset
    files = _list_files(ds, dest)
    pinned = _pins(ds, files, cache, trust_listing)
    _check_listing(files, pinned, ds, dest)
    for f in files:
        target = cache / f["name"]
        fresh = _download(f, target, pinned[f["name"]], ds, dest)
        if target.suffix.lower() == ".zip" and (fresh or not target.with_name(target.name + ".unzip").is_dir()):
            _unzip(target)
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
