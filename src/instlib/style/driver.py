"""``transfer_folder``: style a whole content folder into a new folder in the folder format.

Pairing: each content image takes the style image with the same file stem (or, when the content's
manifest has a non-empty ``style`` column, as Syn-HC folders do, the stem named there); a single
style image file styles every content image. ``select`` (:class:`~instlib.data.selection.ImageFilter`:
stain, name glob, explicit names) keeps only the content images whose paired style image it passes,
e.g. only Syn-HC drawn from DAPI images. ``style_from`` instead styles every content image with an
image it passes, as the authors styled Syn-HC drawn from marker-stain points with DAPI images: a
partner that fails it is replaced by the passing image of the same field (the same name once stain
names are left out: ``..._F4_Cy3_ND1_20x`` and ``..._F4_DAPI_ND1_20x``), else by the passing image whose
cell count is nearest the content's (ties: the first name), :func:`stand_in`. All inputs are checked
before any work starts.

Output: ``out/images/<name>.png`` at the content image's own size and pixel grid (the networks see
tiles of it, :mod:`instlib.style.tiling`), so the content's points (copied byte for byte to
``out/points/``) stay valid pixel coordinates; a manifest row per
image with every setting, the image's seed and its label fidelity (:mod:`instlib.style.fidelity`).
The manifest is rewritten after every batch: a killed run restarted with the same settings skips
the images already listed. ``shard=(i, n)`` does every n-th image; under ``accelerate launch`` the
shard defaults to the process's rank.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from instlib.config.style import TransferConfig
from instlib.data.atomic import atomic_write_bytes
from instlib.data.folder import (IMAGES, MANIFEST, POINTS, Sample, manifest_name, prepare_output, read_manifest,
                                 read_manifest_file, validate_folder, write_manifest)
from instlib.data.images import IMAGE_SUFFIXES, is_image_file, write_image
from instlib.data.points import read_points
from instlib.data.provenance import format_origin, origins
from instlib.data.selection import ImageFilter
from instlib.data.subsets import STAIN_TOKENS, stains_of
from instlib.errors import DataError, InstlibError
from instlib.data.shard import take_shard
from instlib.style.fidelity import measure_fidelity
from instlib.style.imaging import list_images, load_rgb
from instlib.style.models import StyleComponents
from instlib.style.tokens import StyleToken, load_tokens
from instlib.style.transfer import resolve, stylize_images

STAGE = "style-transfer"


def image_seed(seed: int, name: str) -> int:
    """The seed of image ``name``: fixed by the run's seed and the name, whatever the batch, shard or order."""
    return int.from_bytes(hashlib.sha256(f"{seed}/{name}".encode()).digest()[:8], "little") >> 1


def _style_keys(content_dir: Path, samples: list[Sample]) -> dict[str, str]:
    keys = {s.name: s.name for s in samples}
    if (content_dir / MANIFEST).is_file():
        df = read_manifest(content_dir)
        if "style" in df.columns:
            keys.update({n: st for n, st in zip(df["name"], df["style"]) if st and n in keys})
    return keys


def pair_styles(content_dir: str | Path, samples: list[Sample], style: str | Path,
                style_from: ImageFilter | None = None) -> dict[str, Path]:
    """Style image of every content sample (see module docstring); raises naming the first unpaired one.

    ``style_from``: every style image passes it; a partner that does not is replaced by :func:`stand_in`.
    """
    style = Path(style)
    if style.is_file():
        if not is_image_file(style):
            raise DataError(f"is not an image file (supported: {', '.join(IMAGE_SUFFIXES)})", style)
        if style_from is not None:
            style_from.select(style.parent, [style.stem])  # raises when the one style image fails it
        return {s.name: style for s in samples}
    if not style.is_dir():
        raise DataError("no such style folder or image file", style)
    files, keys = list_images(style), _style_keys(Path(content_dir), samples)
    missing = [n for n in keys if keys[n] not in files]
    if missing:
        raise DataError(f"has no style image for {len(missing)} of {len(samples)} content images (first: "
                        f"'{missing[0]}', looked for '{keys[missing[0]]}.*'); pairs are matched by file name "
                        "without suffix, or pass one style image file for all", style)
    if style_from is not None:
        allowed = set(style_from.select(style, sorted(files)))
        outside = {n: k for n, k in keys.items() if k not in allowed}
        if outside:
            try:
                stains = stains_of(style)
            except DataError:  # no stain column: stain names in file names still mark the field
                stains = {}
            counts = _style_counts(style)
            content = {s.name: len(read_points(s.points)) for s in samples if s.name in outside}
            keys.update({n: stand_in(k, content[n], allowed, stains, counts, style) for n, k in outside.items()})
    return {n: files[keys[n]] for n in keys}


def field_key(name: str, stain: str = "") -> tuple[str, ...]:
    """The parts of an image name that say which field it shows: its ``_``-separated parts without stain
    names (``stain`` and :data:`~instlib.data.subsets.STAIN_TOKENS`)."""
    stains = {t.casefold() for t in (*STAIN_TOKENS, stain) if t}
    return tuple(part for part in name.split("_") if part.casefold() not in stains)


def stand_in(partner: str, count: int, allowed: set[str], stains: dict[str, str], counts: dict[str, int],
             style: Path) -> str:
    """The style image that replaces ``partner`` (not in ``allowed``) for content with ``count`` cells: of the
    ``allowed`` images of the same field (:func:`field_key`, with each image's stain from ``stains``), else of
    all ``allowed`` images, the one whose cell count (``counts``) is nearest ``count``, ties broken by name."""
    field = field_key(partner, stains.get(partner, ""))
    candidates = [n for n in allowed if field_key(n, stains.get(n, "")) == field] or sorted(allowed)
    missing = sorted(n for n in candidates if n not in counts)
    if missing:
        raise DataError(f"has no points for style image '{missing[0]}': a stand-in for '{partner}' is chosen by "
                        "cell count, so the style folder needs the folder format", style)
    return min(candidates, key=lambda n: (abs(counts[n] - count), n))


def _style_counts(style: Path) -> dict[str, int]:
    """Cell count of every style image that has a points file."""
    points = style / POINTS
    return {p.stem: len(read_points(p)) for p in sorted(points.glob("*.csv"))} if points.is_dir() else {}


def _selected(samples: list[Sample], styles: dict[str, Path], style: Path, select: ImageFilter) -> list[Sample]:
    """The samples whose paired style image passes ``select`` (judged in the style folder)."""
    folder = style if style.is_dir() else style.parent
    kept = set(select.select(folder, sorted({p.stem for p in styles.values()})))
    return [s for s in samples if styles[s.name].stem in kept]


def _token_for(tokens: list[StyleToken], count: int) -> StyleToken:
    """The token whose category covers ``count``; else the one with the nearest range (a count outside
    every category the style images had, e.g. in a gradual Syn-HC series); the manifest records which."""
    def distance(token: StyleToken) -> int:
        return 0 if token.covers(count) else min(abs(count - token.category[0]), abs(count - token.category[1]))

    return min(tokens, key=distance)


def _digest(path: Path) -> str:
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    h = hashlib.sha256()
    for f in files:
        h.update(f.read_bytes())
    return h.hexdigest()


def _default_shard() -> tuple[int, int] | None:
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by accelerate launch / torchrun
    return (int(os.environ.get("RANK", "0")), world) if world > 1 else None


def _finished(out: Path, shard: tuple[int, int] | None) -> dict[str, dict]:
    path = out / manifest_name(shard)
    if not path.is_file():
        return {}
    rows = read_manifest_file(path).to_dict("records")
    return {r["name"]: r for r in rows if (out / IMAGES / f"{r['name']}.png").is_file()}


def _provenance(sample: Sample, style: Path, token: StyleToken) -> dict:
    # 'style' names the paired image as Syn-HC manifests do; the full paths are kept beside it.
    return {"content": str(sample.image), "style": style.stem, "style_image": str(style),
            "category": f"{token.category[0]}-{token.category[1]}" if token.category else ""}


def _fidelity(styled, content, points) -> dict:
    fid, base = measure_fidelity(styled, points), measure_fidelity(content, points)
    return {"height": styled.shape[0], "width": styled.shape[1], "fidelity_recall": fid.recall,
            "fidelity_spurious": fid.spurious, "fidelity_blobs": fid.blobs, "content_recall": base.recall,
            "content_spurious": base.spurious}


def transfer_folder(content_dir: str | Path, style: str | Path, token: str | Path, out: str | Path,
                    components: StyleComponents, config: TransferConfig = TransferConfig(), *,
                    select: ImageFilter | None = None, style_from: ImageFilter | None = None, batch_size: int = 1,
                    shard: tuple[int, int] | None = None, overwrite: bool = False, progress: bool = True) -> Path:
    """Style every image of ``content_dir`` with its paired style image; write the folder format to ``out``.

    ``token``: a token file, or a folder of category tokens (each image gets the one covering its
    count, or the nearest). ``config``: the transfer's settings (the networks' tile, its layout, strength,
    sampler, guidance, seed, ...); those left to the preset are the model's
    (:func:`~instlib.style.transfer.resolve`). ``select``: style only the content images whose paired style
    image it passes.
    ``style_from``: style every content image with a style image it passes (see :func:`pair_styles`).
    Results are the same for any ``batch_size`` and ``shard``. Returns ``out``.
    """
    if batch_size < 1:
        raise InstlibError(f"batch size must be at least 1, got {batch_size}")
    config = resolve(components, config)  # the manifest records the settings this model runs with
    content_dir, token, out = Path(content_dir), Path(token), Path(out)
    samples = validate_folder(content_dir)  # every input problem surfaces before anything is written
    styles = pair_styles(content_dir, samples, style, style_from)
    if select is not None:
        samples = _selected(samples, styles, Path(style), select)
    # condition "another": the token sees the next content image's style image (cyclic, in name order)
    token_sees = {s.name: styles[samples[(i + 1) % len(samples)].name] if config.condition == "another"
                  else styles[s.name] for i, s in enumerate(samples)}
    tokens = load_tokens(token, components.device)
    counts = {s.name: len(read_points(s.points)) for s in samples}
    token_of = {n: _token_for(tokens, c) for n, c in counts.items()}
    transfer = config.dump()
    settings = {"content": str(content_dir.resolve()), "style": str(Path(style).resolve()),
                "token": str(token.resolve()), "token_sha256": _digest(token), "model": components.model,
                "select": select.describe() if select is not None else None,
                **({"style_from": style_from.describe()} if style_from is not None else {}), **transfer}
    prepare_output(out, STAGE, settings, overwrite)
    transfer["base_seed"] = transfer.pop("seed")  # each row's 'seed' is its image's own (image_seed)
    common = {"model": components.model, "token": str(token), **transfer}
    shard = shard if shard is not None else _default_shard()
    rows = _finished(out, shard)
    content_origin = origins(content_dir)
    todo = [s for s in take_shard(samples, shard) if s.name not in rows]
    bar = tqdm(total=len(todo), desc=f"InST -> {out}", disable=not progress)
    for start in range(0, len(todo), batch_size):
        batch = todo[start:start + batch_size]
        seeds = [image_seed(config.seed, s.name) for s in batch]
        contents = [load_rgb(s.image) for s in batch]
        styled = stylize_images(components, [token_of[s.name] for s in batch], contents,
                                [load_rgb(styles[s.name]) for s in batch], config, seeds,
                                token_images=[load_rgb(token_sees[s.name]) for s in batch])
        for s, img, content, image_seed_ in zip(batch, styled, contents, seeds):
            write_image(out / IMAGES / f"{s.name}.png", img)
            atomic_write_bytes(out / POINTS / f"{s.name}.csv", s.points.read_bytes())
            rows[s.name] = {"name": s.name, "count": counts[s.name], "source": "inst", "seed": image_seed_,
                            **common, **_provenance(s, styles[s.name], token_of[s.name]),
                            "token_style": token_sees[s.name].stem,
                            # The real images it was drawn from: its content's, its style image and the token's.
                            "origin": format_origin([*content_origin.get(s.name, ()), styles[s.name].stem,
                                                     token_sees[s.name].stem]),
                            **_fidelity(img, content, read_points(s.points))}
        write_manifest(out, list(rows.values()), shard=shard)
        bar.update(len(batch))
    bar.close()
    if not rows:
        write_manifest(out, pd.DataFrame(columns=["name", "count"]), shard=shard)
    return out
