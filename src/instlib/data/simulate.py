"""An offline stand-in for real fluorescence images of cultured cells, with exact points.

Where Syn-HC draws flat white ellipses on noise, real DAPI/Hoechst images show nuclei of varied size,
shape and brightness with chromatin texture and nucleoli, touching and overlapping in clusters,
seen through a blurring objective, under uneven illumination, with photon (Poisson) and read
(Gaussian) noise and some unlabelled debris. This module renders all of that so the offline profiles
have a target domain that is not just Syn-HC again. It is a simulator: no substitute for IDCIA.

Stains: a nuclear stain (DAPI, Hoechst) labels every nucleus; a marker stain (Cy3, GFAP, MAP2ab, ...)
labels only the cells that express the marker, a share that varies from image to image and is often
none or one, with their larger, irregular cell bodies and processes over a faint autofluorescent field,
as IDCIA's marker images are counted. Presets (:data:`PRESETS`): ``nuclei`` (the default look) and
``hard`` (brightness varying several-fold inside an image, saturated clumps, more debris, stronger uneven
background, fewer photons), as hard as real data gets.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from instlib.data.folder import IMAGES, POINTS, prepare_output, write_manifest
from instlib.data.images import write_image
from instlib.data.points import write_points
from instlib.data.subsets import STAIN
from instlib.data.synth import image_rng
from instlib.errors import ArgumentError
from instlib.data.shard import take_shard

COLORS = {"gray": None, "dapi": (0.10, 0.30, 1.00)}  # RGB gains of the blue DAPI look-up table


@dataclass(frozen=True)
class SimConfig:
    """What a simulated field of view looks like; radii in pixels."""

    radius: tuple[float, float] = (6.0, 11.0)
    cluster_fraction: float = 0.45      # share of nuclei placed in tight clusters
    brightness_sigma: float = 0.35      # log-normal spread of nucleus brightness
    texture: float = 0.35               # chromatin texture depth
    blur: tuple[float, float] = (0.8, 1.6)
    photons: tuple[float, float] = (25.0, 120.0)  # photons at full scale: lower = noisier
    read_noise: float = 0.012
    vignetting: tuple[float, float] = (0.15, 0.45)
    debris_per_cell: float = 0.04
    saturation: float | None = None  # detector gain before the 8-bit full scale clips at 1 (None: 1, fewer clip)


#: Named looks: the default, and one with every difficulty of real images turned up.
PRESETS = {
    "nuclei": SimConfig(),
    "hard": SimConfig(cluster_fraction=0.6, brightness_sigma=0.8, photons=(15.0, 80.0), vignetting=(0.3, 0.7),
                      debris_per_cell=0.15, saturation=1.4),
}
#: Stains that label every nucleus; any other stain name is rendered as a marker of some cells.
NUCLEAR_STAINS = ("DAPI", "Hoechst")


def _place(n: int, shape: tuple[int, int], r_mean: float, frac: float, rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    n_clu = int(round(n * frac))
    pts = [rng.uniform(0, 1, size=(n - n_clu, 2)) * [w, h]]
    if n_clu:
        seeds = rng.uniform(0, 1, size=(max(1, n_clu // 5), 2)) * [w, h]
        members = seeds[rng.integers(0, len(seeds), n_clu)] + rng.normal(0, 1.6 * r_mean, size=(n_clu, 2))
        pts.append(members)
    pts = np.concatenate(pts)
    return np.clip(pts, 0, np.array([w, h]) - 1e-3)


def _stamp(shape, centers, radii, aspect, angle, harmonics, gains, edge=1.5):
    """Sum soft-edged star-shaped blobs into an image (all blobs at once on bounding-box grids)."""
    h, w = shape
    out = np.zeros(h * w, np.float64)
    if len(centers) == 0:
        return out.reshape(shape)
    r = int(np.ceil(radii.max() * 1.4 + 2 * edge))
    off = np.arange(-r, r + 1)
    base = np.floor(centers).astype(np.int64)
    cols = base[:, 0, None, None] + off[None, None, :]
    rows = base[:, 1, None, None] + off[None, :, None]
    dx = cols + 0.5 - centers[:, 0, None, None]
    dy = rows + 0.5 - centers[:, 1, None, None]
    cos, sin = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u, v = dx * cos + dy * sin, (-dx * sin + dy * cos) / aspect[:, None, None]
    phi, dist = np.arctan2(v, u), np.hypot(u, v)
    k = np.arange(2, 2 + harmonics.shape[1] // 2)
    amp, phase = harmonics[:, : len(k)], harmonics[:, len(k):]
    boundary = radii[:, None, None] * (1 + np.sum(amp[:, :, None, None] * np.cos(
        k[None, :, None, None] * phi[:, None] + phase[:, :, None, None]), axis=1))
    with np.errstate(over="ignore"):  # far outside a large blob exp() overflows to inf: the profile is 0 there
        profile = 1.0 / (1.0 + np.exp((dist - boundary) / (edge / 2.0)))  # soft membrane edge
    val = profile * gains[:, None, None]
    rows, cols = np.broadcast_arrays(rows, cols)
    ok = (rows >= 0) & (rows < h) & (cols >= 0) & (cols < w) & (val > 1e-4)
    out += np.bincount((rows * w + cols)[ok], weights=val[ok], minlength=h * w)
    return out.reshape(shape)


def render_fluorescence(n: int, shape: tuple[int, int], rng: np.random.Generator,
                        config: SimConfig = SimConfig(), marker: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(image float32 (H, W) in [0, 1], points (k, 2))`` for one simulated field of view of ``n`` cells.

    A nuclear stain shows (and labels) all ``n`` nuclei; a ``marker`` stain only the cells that express it.
    """
    if marker:
        return _render_marker(n, shape, rng, config)
    c, (h, w) = config, shape
    pts = _place(n, shape, float(np.mean(c.radius)), c.cluster_fraction, rng)
    radii = rng.uniform(*c.radius, size=n)
    n_harm = 3
    harmonics = np.concatenate([rng.uniform(0, 0.08, size=(n, n_harm)), rng.uniform(0, 2 * np.pi, size=(n, n_harm))], 1)
    gains = rng.lognormal(0.0, c.brightness_sigma, size=n)
    gains[rng.random(n) < 0.05] *= 2.2  # condensed (mitotic) nuclei are much brighter
    nuclei = _stamp(shape, pts, radii, rng.uniform(0.65, 1.0, n), rng.uniform(0, np.pi, n), harmonics, gains)

    # Chromatin texture and nucleoli: modulate the nuclei, never the background.
    grain = ndimage.gaussian_filter(rng.standard_normal(shape), 1.2)
    grain /= grain.std() + 1e-8
    nuclei *= np.clip(1.0 + c.texture * grain, 0.2, None)
    m = int(rng.poisson(1.5 * n))
    if m:
        nucleoli = pts[rng.integers(0, n, m)] + rng.normal(0, 0.35, (m, 2)) * radii.mean() if n else np.zeros((0, 2))
        nucleoli = np.clip(nucleoli, 0, np.array([w, h]) - 1e-3)
        nuclei -= 0.35 * _stamp(shape, nucleoli, rng.uniform(1.0, 2.0, m), np.ones(m), np.zeros(m),
                                np.zeros((m, 2)), rng.uniform(0.5, 1.0, m), edge=1.0) * (nuclei > 0.2)

    return _image(nuclei, n, shape, rng, c), pts


def _render_marker(n: int, shape: tuple[int, int], rng: np.random.Generator, c: SimConfig
                   ) -> tuple[np.ndarray, np.ndarray]:
    """A marker stain: of ``n`` cells a share (often none or one) is positive; each shows a large irregular
    soma and a few thin processes, and only those cells are labelled."""
    h, w = shape
    k = int(rng.binomial(n, rng.beta(0.6, 2.0)))
    pts = _place(k, shape, 2.0 * float(np.mean(c.radius)), c.cluster_fraction / 2, rng)
    radii = 1.8 * rng.uniform(*c.radius, size=k)
    harmonics = np.concatenate([rng.uniform(0.05, 0.25, size=(k, 3)), rng.uniform(0, 2 * np.pi, size=(k, 3))], 1)
    gains = rng.lognormal(0.0, c.brightness_sigma, size=k)
    cells = _stamp(shape, pts, radii, rng.uniform(0.5, 1.0, k), rng.uniform(0, np.pi, k), harmonics, gains, edge=2.5)
    p = int(rng.poisson(2.0 * k))  # processes: thin streaks leaving the somata
    if p:
        owner = rng.integers(0, k, p)
        angle = rng.uniform(0, 2 * np.pi, p)
        length = radii[owner] * rng.uniform(1.5, 3.5, p)
        mid = pts[owner] + (radii[owner] + length / 2)[:, None] * np.stack([np.cos(angle), np.sin(angle)], 1)
        cells += _stamp(shape, np.clip(mid, 0, np.array([w, h]) - 1e-3), length / 2, np.full(p, 0.12), angle,
                        np.zeros((p, 2)), 0.5 * gains[owner], edge=1.5)
    grain = ndimage.gaussian_filter(rng.standard_normal(shape), 2.0)
    cells *= np.clip(1.0 + c.texture * grain / (grain.std() + 1e-8), 0.2, None)
    return _image(0.8 * cells, n, shape, rng, c, background=0.06), pts


def _image(cells: np.ndarray, n: int, shape: tuple[int, int], rng: np.random.Generator, c: SimConfig,
           background: float = 0.035) -> np.ndarray:
    """The labelled signal ``cells`` through debris, background, uneven illumination, optics, detector
    saturation and noise: float32 ``(H, W)`` in [0, 1]."""
    h, w = shape
    # Unlabelled debris: small bright specks and large faint smears.
    d = int(rng.poisson(c.debris_per_cell * n + 2))
    debris = _stamp(shape, rng.uniform(0, 1, (d, 2)) * [w, h] * 0.999, rng.uniform(0.7, 2.5, d), np.ones(d),
                    np.zeros(d), np.zeros((d, 2)), rng.uniform(0.3, 1.5, d), edge=0.8)
    s = int(rng.integers(0, 3))
    debris += _stamp(shape, rng.uniform(0, 1, (s, 2)) * [w, h] * 0.999, rng.uniform(15, 40, s), rng.uniform(0.4, 1, s),
                     rng.uniform(0, np.pi, s), np.zeros((s, 2)), rng.uniform(0.03, 0.1, s), edge=8.0)

    # Uneven illumination: off-centre vignetting plus a gentle gradient.
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    cy, cx = rng.uniform(0.3, 0.7, 2) * np.array([h, w]) / max(h, w)
    illum = 1 - rng.uniform(*c.vignetting) * ((yy - cy) ** 2 + (xx - cx) ** 2) / 0.5
    illum *= 1 + rng.uniform(-0.15, 0.15) * (xx - 0.5) + rng.uniform(-0.15, 0.15) * (yy - 0.5)

    signal = 0.55 * (cells + debris) / np.exp(c.brightness_sigma**2 / 2)  # mean cell near 0.55
    uneven = background + 0.015 * ndimage.gaussian_filter(rng.standard_normal(shape), max(h, w) / 16) * 8
    optical = ndimage.gaussian_filter(np.clip(signal + uneven, 0, None) * illum, rng.uniform(*c.blur))
    peak = rng.uniform(*c.photons)
    noisy = rng.poisson(np.clip(optical, 0, None) * peak) / peak + rng.normal(0, c.read_noise, shape)
    if c.saturation is not None:  # a higher gain: the converter's full scale flattens the bright clumps
        noisy = noisy * c.saturation
    return np.clip(noisy, 0, 1).astype(np.float32)


def colorize(gray: np.ndarray, color: str) -> np.ndarray:
    """``(H, W)`` intensities to ``(H, W, 1)`` gray or ``(H, W, 3)`` through a look-up table."""
    gains = COLORS[color]
    return gray[..., None] if gains is None else gray[..., None] * np.array(gains, np.float32)


def simulate(out: str | Path, n: int, size: tuple[int, int], cells: tuple[int, int], seed: int = 0,
             color: str = "gray", config: SimConfig | str = "nuclei", stains: tuple[str, ...] = (),
             overwrite: bool = False, shard: tuple[int, int] | None = None, progress: bool = True) -> Path:
    """Write ``n`` simulated fluorescence images (``U{cells}`` cells in each field) in the folder format.

    ``config``: a :class:`SimConfig` or a preset's name (:data:`PRESETS`). ``stains``: image ``i`` is of
    stain ``stains[i % len(stains)]``, written to the manifest's ``stain`` column; a marker stain labels
    only the positive cells (see the module docstring). Without stains every image is a nuclear stain.
    """
    lo, hi = cells
    if n < 1 or lo < 0 or hi < lo or min(size) < 8:
        raise ArgumentError(f"need n >= 1, 0 <= cells LO <= HI and size >= 8; got n={n}, cells={cells}, size={size}")
    if color not in COLORS:
        raise ArgumentError(f"unknown color {color!r}; choose one of {sorted(COLORS)}")
    if isinstance(config, str):
        if config not in PRESETS:
            raise ArgumentError(f"unknown preset {config!r}; choose one of {', '.join(PRESETS)}")
        config = PRESETS[config]
    settings = {"n": n, "size": list(size), "cells": [lo, hi], "seed": seed, "color": color, **asdict(config),
                **({"stains": list(stains)} if stains else {})}
    out = prepare_output(out, "simulate", settings, overwrite)
    rows = []
    names = [f"sim_{i:05d}" for i in range(n)]
    for i, name in tqdm(take_shard(list(enumerate(names)), shard), desc=f"simulate -> {out}", disable=not progress):
        stain = stains[i % len(stains)] if stains else None
        rng = image_rng(seed, name)
        img, pts = render_fluorescence(int(rng.integers(lo, hi + 1)), tuple(size), rng, config,
                                       marker=stain is not None and stain not in NUCLEAR_STAINS)
        write_image(out / IMAGES / f"{name}.png", colorize(img, color))
        write_points(out / POINTS / f"{name}.csv", pts)
        rows.append({"name": name, "count": len(pts), "source": "simulated", "seed": seed, "color": color,
                     "height": size[0], "width": size[1], **({STAIN: stain} if stain else {})})
    write_manifest(out, rows, shard=shard)
    return out
