"""Hard-coded synthetic images (Syn-HC), the authors' algorithm, vectorised.

Per image: a Gaussian-noise background (mean ~ U(10, 30), std 5), one filled ellipse of intensity
255 per cell (semi-axes ~ U[0.4, 0.6) x cell size, angle ~ U(0, 360)), then a global contrast and
brightness jitter (alpha ~ U(0.8, 1.2), beta ~ U(-20, 20)), clipped to uint8. The labels are exactly
the cells drawn. The reference draws one ``cv2.ellipse`` per cell; here every cell's bounding box is
tested at once, so an image costs a few array operations whatever its cell count.

Reproducibility: each image draws from its own generator seeded by ``(seed, name)``, so a file's
bytes depend only on the seed and its name, never on worker count, shard or order.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import ndtri
from tqdm.auto import tqdm

from instlib.config.data import AUTO_CELL_SIZE, SynHCConfig
from instlib.data.cellsize import samples_cell_size
from instlib.data.folder import IMAGES, POINTS, prepare_output, write_manifest
from instlib.data.images import image_size, write_image
from instlib.data.maps import rescale_points
from instlib.data.points import read_points, write_points
from instlib.data.selection import ImageFilter, selected_samples
from instlib.errors import ArgumentError
from instlib.data.shard import take_shard


_NOISE_LEVELS = 1 << 16
_GAUSS_QUANTILES = ndtri((np.arange(_NOISE_LEVELS) + 0.5) / _NOISE_LEVELS)  # N(0, 1), |z| <= 4.3


def image_rng(seed: int, name: str) -> np.random.Generator:
    """A generator that depends only on ``seed`` and the image's ``name``."""
    key = np.frombuffer(hashlib.sha256(name.encode()).digest()[:16], dtype=np.uint32)
    return np.random.default_rng(np.random.SeedSequence([seed, *key.tolist()]))


def fill_ellipses(canvas: np.ndarray, centers: np.ndarray, axes: np.ndarray, angles_deg: np.ndarray,
                  value: float) -> None:
    """Set every pixel whose centre lies in any of the ellipses to ``value``, in place.

    ``centers`` are ``(N, 2)`` ``(X, Y)``, ``axes`` ``(N, 2)`` semi-axes (along the rotated x and y),
    ``angles_deg`` the rotation. All cells are handled at once on ``(N, K, K)`` bounding-box grids.
    """
    if len(centers) == 0:
        return
    h, w = canvas.shape[:2]
    r = int(np.ceil(axes.max())) + 1
    off = np.arange(-r, r + 1, dtype=np.float32)
    base = np.round(centers).astype(np.int64)  # (N, 2) pixel nearest each centre
    cols = base[:, 0, None, None] + off.astype(np.int64)[None, None, :]
    rows = base[:, 1, None, None] + off.astype(np.int64)[None, :, None]
    dx = (cols - centers[:, 0, None, None]).astype(np.float32)
    dy = (rows - centers[:, 1, None, None]).astype(np.float32)
    theta = np.deg2rad(angles_deg).astype(np.float32)[:, None, None]
    cos, sin = np.cos(theta), np.sin(theta)
    u = (dx * cos + dy * sin) / axes[:, 0, None, None].astype(np.float32)
    v = (-dx * sin + dy * cos) / axes[:, 1, None, None].astype(np.float32)
    rows, cols = np.broadcast_arrays(rows, cols)
    inside = (u * u + v * v <= 1.0) & (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w)
    canvas[rows[inside], cols[inside]] = value


def render_synhc(points: np.ndarray, shape: tuple[int, int], rng: np.random.Generator,
                 config: SynHCConfig = SynHCConfig()) -> np.ndarray:
    """One Syn-HC image (``uint8 (H, W)``) with a cell centred on each ``(X, Y)`` point."""
    c = config
    mu, alpha, beta = rng.uniform(*c.background_mean), rng.uniform(*c.alpha), rng.uniform(*c.beta)
    # A background pixel ends as uint8(clip(alpha * (mu + std * z) + beta)), truncated as the
    # reference's astype does. With z drawn as one of 65536 equiprobable Gaussian quantiles, that
    # whole chain is a 65536-entry lookup table: one uint16 draw and one gather per pixel.
    lut = np.clip(alpha * (mu + c.background_std * _GAUSS_QUANTILES) + beta, 0, 255).astype(np.uint8)
    img = lut[rng.integers(0, _NOISE_LEVELS, size=shape, dtype=np.uint16)]
    n = len(points)
    axes = rng.uniform(c.axis_fraction[0] * c.cell_size, c.axis_fraction[1] * c.cell_size, size=(n, 2))
    angles = rng.uniform(0.0, 360.0, size=n)
    fill_ellipses(img, points, axes, angles, np.clip(alpha * 255.0 + beta, 0, 255).astype(np.uint8))
    return img


def random_points(n: int, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """``n`` points uniformly inside an image of ``shape=(H, W)``."""
    return rng.uniform(0.0, 1.0, size=(n, 2)) * np.array([shape[1], shape[0]])


def gradual_counts(n: int, steps: int) -> np.ndarray:
    """The reference's gradual series: ``n_k = linspace(1, N, steps)`` cells, rounded down."""
    if n == 0:
        return np.zeros(steps, dtype=np.int64)
    return np.linspace(1, n, steps).astype(np.int64)


@dataclass(frozen=True)
class _Job:
    name: str
    points: np.ndarray
    shape: tuple[int, int]
    style: str


def _render_job(job: _Job, out: Path, config: SynHCConfig) -> dict:
    img = render_synhc(job.points, job.shape, image_rng(config.seed, job.name), config)
    write_image(out / IMAGES / f"{job.name}.png", img)
    write_points(out / POINTS / f"{job.name}.csv", job.points)
    # 'origin': the real image the points came from (empty for random layouts); see instlib.data.provenance.
    return {"name": job.name, "count": len(job.points), "source": "synhc", "seed": config.seed, "origin": job.style,
            "style": job.style, "height": job.shape[0], "width": job.shape[1], "cell_size": config.cell_size}


def _run(jobs: list[_Job], out: Path, config: SynHCConfig, workers: int,
         shard: tuple[int, int] | None, progress: bool) -> Path:
    todo = take_shard(jobs, shard)
    desc = f"Syn-HC -> {out}"
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            futures = [pool.submit(_render_job, j, out, config) for j in todo]
            rows = [f.result() for f in tqdm(futures, desc=desc, disable=not progress)]
    else:
        rows = [_render_job(j, out, config) for j in tqdm(todo, desc=desc, disable=not progress)]
    write_manifest(out, rows, shard=shard)
    return out


def synthesize_from_points(real_dir: str | Path, out: str | Path, config: SynHCConfig = SynHCConfig(), *,
                           steps: int | None = None, size: tuple[int, int] | None = None,
                           select: ImageFilter | None = None, overwrite: bool = False, workers: int = 1,
                           shard: tuple[int, int] | None = None, progress: bool = True) -> Path:
    """One Syn-HC image per real image, with exactly its points (its "style" pair shares the name).

    ``size=(H, W)`` draws on a canvas of that size with the points rescaled onto it (the paper's
    800 x 800); by default the canvas is the real image's size. ``steps=K`` makes the gradual
    series instead: ``K`` images per real image named ``<name>_gKK`` with the first ``n_k`` cells.
    ``config.cell_size="auto"``: measured on the real images at their points (:mod:`instlib.data.cellsize`).
    ``select``: draw only the real images it passes (e.g. one stain; the authors drew DAPI images only).
    """
    samples = selected_samples(real_dir, select)  # every problem is found before anything is written
    estimated = config.cell_size == AUTO_CELL_SIZE
    if estimated:
        config = config.updated(cell_size=samples_cell_size(samples, real_dir))
    jobs = []
    for s in samples:
        src_shape = image_size(s.image)
        shape = tuple(size) if size else src_shape
        pts = read_points(s.points, shape=src_shape)
        if size:
            pts = rescale_points(pts, src_shape, shape)
        if steps:
            jobs += [_Job(f"{s.name}_g{k:02d}", pts[:n], shape, s.name)
                     for k, n in enumerate(gradual_counts(len(pts), steps))]
        else:
            jobs.append(_Job(s.name, pts, shape, s.name))
    settings = {"mode": "gradual" if steps else "from-points", "real_dir": str(Path(real_dir).resolve()),
                "steps": steps, "size": list(size) if size else None, "cell_size_estimated": estimated,
                "select": select.describe() if select is not None else None, **config.dump()}
    prepare_output(out, "synth", settings, overwrite)
    return _run(jobs, Path(out), config, workers, shard, progress)


def synthesize_random(out: str | Path, n: int, size: tuple[int, int], cells: tuple[int, int],
                      config: SynHCConfig = SynHCConfig(), *, overwrite: bool = False, workers: int = 1,
                      shard: tuple[int, int] | None = None, progress: bool = True) -> Path:
    """``n`` Syn-HC images of ``size=(H, W)`` with ``U{cells[0]..cells[1]}`` cells at random places."""
    lo, hi = cells
    if n < 1 or lo < 0 or hi < lo or min(size) < 1:
        raise ArgumentError(f"need n >= 1, 0 <= cells LO <= HI and a positive size; got n={n}, cells={cells}, size={size}")
    if config.cell_size == AUTO_CELL_SIZE:
        raise ArgumentError("cell size 'auto' is measured at real points: give a number for random layouts")
    jobs = []
    for i in range(n):
        name = f"synhc_{i:05d}"
        rng = image_rng(config.seed, name + "/layout")
        jobs.append(_Job(name, random_points(int(rng.integers(lo, hi + 1)), tuple(size), rng), tuple(size), ""))
    settings = {"mode": "random", "n": n, "size": list(size), "cells": [lo, hi], **config.dump()}
    prepare_output(out, "synth", settings, overwrite)
    return _run(jobs, Path(out), config, workers, shard, progress)


__all__ = ["SynHCConfig", "render_synhc", "fill_ellipses", "gradual_counts", "image_rng", "random_points",
           "synthesize_from_points", "synthesize_random"]
