"""Which real images a stage uses (Syn-HC, style tokens, InST, the realism score): one stain, a name
pattern, or an explicit list of names.

Real sets mix stains (IDCIA: DAPI counts every nucleus, Cy3 markers only positive cells), while the
reference's tokens and InST set are DAPI images only. The stain is read from the folder manifest's
``stain`` column; it is not guessed from file names, because IDCIA names carry several stain names
at once (``..._GFAP_F4_DAPI_ND1_20x``). For folders without that column, ``names`` is a glob over
image names (file stems), e.g. ``'*_DAPI_*'``. ``only`` names the images allowed at all, e.g. the
training part of a split, so that tokens never see a test image.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

from instlib.data.folder import Sample, validate_folder
from instlib.data.subsets import stains_of
from instlib.errors import DataError


@dataclass(frozen=True)
class ImageFilter:
    """A selection of image names; every criterion that is set must hold."""

    stain: str | None = None
    names: str | None = None
    only: frozenset[str] | None = None

    @classmethod
    def of(cls, stain: str | None = None, names: str | None = None,
           only: Collection[str] | None = None) -> ImageFilter:
        """A filter from user-facing values (``only`` any collection of names)."""
        return cls(stain, names, frozenset(only) if only is not None else None)

    def describe(self) -> dict:
        """The criteria as plain data (for settings and metadata)."""
        return {"stain": self.stain, "names": self.names, "only": sorted(self.only) if self.only is not None else None}

    def select(self, folder: str | Path, names: list[str]) -> list[str]:
        """The ``names`` of images in ``folder`` that pass; raises when none does (saying which criterion)."""
        folder = Path(folder)
        kept = list(names)
        if self.only is not None:
            kept = [n for n in kept if n in self.only]
        if self.names is not None:
            kept = [n for n in kept if fnmatch.fnmatchcase(n, self.names)]
        if self.stain is not None:
            stains = stains_of(folder)
            kept = [n for n in kept if stains.get(n, "").casefold() == self.stain.casefold()]
        if not kept:
            raise DataError(f"has no images left after the filter {self.describe_short()} (of {len(names)})", folder)
        return kept

    def describe_short(self) -> str:
        """The criteria in a few words (for messages)."""
        parts = [f"stain={self.stain}" if self.stain else "", f"names={self.names}" if self.names else "",
                 f"{len(self.only)} listed names" if self.only is not None else ""]
        return ", ".join(p for p in parts if p) or "none"


def selected_samples(folder: str | Path, select: ImageFilter | None = None) -> list[Sample]:
    """The folder's samples (validated: every problem is found before anything is written) that
    ``select`` passes; all of them without a filter."""
    samples = validate_folder(folder)
    if select is None:
        return samples
    kept = set(select.select(folder, [s.name for s in samples]))
    return [s for s in samples if s.name in kept]
