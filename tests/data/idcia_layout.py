"""IDCIA's layout as its authors ship it, built in a temporary folder by the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile

from instlib.data.images import to_uint8
from instlib.data.simulate import render_fluorescence

# name -> (stain, split, list entry style); names as IDCIA writes them
IMAGES = {
    "220812_GFP-AHPC_A_TuJ1_F1_DAPI_ND1_20x": ("DAPI", "train", "with suffix"),
    "220812_GFP-AHPC_A_TuJ1_F2_DAPI_ND1_20x": ("DAPI", "train", "bare"),
    "220812_GFP-AHPC_A_TuJ1_F3_DAPI_ND1_20x": ("DAPI", "val", "with suffix"),
    "220812_GFP-AHPC_A_TuJ1_F4_DAPI_ND1_20x": ("DAPI", "test", "bare"),
    "220812_GFP-AHPC_A_TuJ1_F1_Cy3_ND1_20x": ("Cy3", "train", "bare"),
    "220812_GFP-AHPC_A_TuJ1_F2_Cy3_ND1_20x": ("Cy3", "test", "with suffix"),
}
LISTS = {"train": "train.csv", "val": "validation.csv", "test": "test.csv"}


def imagej_csv(points: np.ndarray) -> str:
    """ImageJ's 'Measure' export: an unnamed index column, then Area, Mean, Min, Max, X, Y."""
    lines = [" ,Area,Mean,Min,Max,X,Y"]
    lines += [f"{i},0,255,255,255,{x:.3f},{y:.3f}" for i, (x, y) in enumerate(points, start=1)]
    return "\n".join(lines) + "\n"


def make_idcia(root: Path, images: dict = IMAGES, shape: tuple[int, int] = (30, 40), cells: tuple[int, int] = (1, 6),
               seed: int = 0) -> dict[str, np.ndarray]:
    """Write the layout (8-bit gray TIFFs, ImageJ CSVs, quoted split lists, OS clutter); returns the points."""
    rng = np.random.default_rng(seed)
    truth = {}
    for name, (stain, _, _) in images.items():
        img, pts = render_fluorescence(int(rng.integers(cells[0], cells[1] + 1)), shape, rng)
        pts = np.round(pts, 3)
        for sub in ("images", "ground_truth"):
            (root / sub / stain).mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / "images" / stain / f"{name}.tiff", to_uint8(img).squeeze())
        (root / "ground_truth" / stain / f"{name}.csv").write_text(imagej_csv(pts))
        truth[name] = pts
    for split, file in LISTS.items():
        entries = [f'"{n}.tiff"' if style == "with suffix" else f'"{n}"'
                   for n, (_, s, style) in images.items() if s == split]
        (root / file).write_text("\n".join(entries) + "\n")
    # what copies from Windows and macOS bring along
    stains = sorted({stain for stain, _, _ in images.values()})
    (root / "images" / stains[0] / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0junk")
    (root / "images" / stains[-1] / "desktop.ini").write_text("[.ShellClassInfo]\n")
    (root / "ground_truth" / stains[0] / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (root / "__MACOSX" / "images" / stains[0]).mkdir(parents=True)
    (root / "__MACOSX" / "images" / stains[0] / "._x.tiff").write_bytes(b"\x00\x05\x16\x07")
    (root / "__MACOSX" / "._train.csv").write_bytes(b"\x00\x05\x16\x07")
    return truth
