"""Which real images a synthetic image was drawn from, so nothing derived from a test image trains.

A synthetic folder's manifest names them in its ``origin`` column: the real image whose points a
Syn-HC image carries, and for an InST image also the real image that lent its style; several names
are joined by ``;``. Older manifests without ``origin`` name the real image in ``style``, which is
read instead. Real images are matched by name (file name without suffix).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

from instlib.data.folder import Sample, read_manifest
from instlib.errors import DataError

SEP = ";"


def format_origin(names: Iterable[str]) -> str:
    """The ``origin`` cell for an image drawn from ``names`` (sorted, without repeats or blanks)."""
    return SEP.join(sorted({n for n in names if n}))


def origins(folder: str | Path) -> dict[str, frozenset[str]]:
    """Real images each image of ``folder`` was drawn from, by image name; empty without a manifest."""
    try:
        manifest = read_manifest(folder)
    except DataError:
        return {}
    column = next((c for c in ("origin", "style") if c in manifest.columns), None)
    if column is None:
        return {}
    return {name: frozenset(n for n in cell.split(SEP) if n) for name, cell in zip(manifest["name"], manifest[column])}


def sample_origins(samples: Sequence[Sample]) -> list[frozenset[str]]:
    """The origins of every sample, in order (each folder's manifest is read once)."""
    by_folder: dict[Path, dict[str, frozenset[str]]] = {}
    out = []
    for s in samples:
        folder = s.image.parent.parent
        if folder not in by_folder:
            by_folder[folder] = origins(folder)
        out.append(by_folder[folder].get(s.name, frozenset()))
    return out


def drawn_from(sample_origin: Sequence[frozenset[str]], held_out: Iterable[str]) -> np.ndarray:
    """Boolean mask: which images were drawn from any of the ``held_out`` real images."""
    held_out = set(held_out)
    return np.array([bool(o & held_out) for o in sample_origin], dtype=bool)

