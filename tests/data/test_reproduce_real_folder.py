"""A user's own folder, as IDCIA ships it, through every notebook of the smoke profile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import instlib

from idcia_layout import make_idcia

ROOT = Path(__file__).resolve().parents[2]
# 12 DAPI images with the official split 8 / 2 / 2, names as IDCIA writes them
SHIPPED = {f"220812_GFP-AHPC_A_TuJ1_F{i}_DAPI_ND1_20x": ("DAPI", split, "with suffix" if i % 2 else "bare")
           for i, split in enumerate(["train"] * 8 + ["val"] * 2 + ["test"] * 2, start=1)}


@pytest.mark.slow
def test_reproduce_on_an_idcia_shaped_folder(tmp_path: Path):
    src = tmp_path / "IDCIA"
    make_idcia(src, SHIPPED, shape=(64, 64), cells=(3, 30), seed=4)
    run = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "instlib.cli", "reproduce", "--profile", "smoke", "--out", str(run),
                           "--set", f"data.real={src}", "--no-book"],
                          capture_output=True, text=True, cwd=ROOT, timeout=1800,
                          env={**os.environ, "PYTHONPATH": str(Path(instlib.__file__).parents[1])})
    assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"

    imported = run / "data" / "imported"
    assert (run / "data" / "real_dir.txt").read_text().splitlines() == [str(imported.resolve()), str(src)]
    assert len(list((imported / "images").iterdir())) == len(SHIPPED)
    executed = sorted((run / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert len(executed) == len(list((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")))
    for nb in executed:  # every page says which folder and which official split it used
        text = "".join("".join(o.get("data", {}).get("text/markdown", ""))
                       for c in json.loads(nb.read_text())["cells"] for o in c.get("outputs", []))
        assert f"the folder {src} (ships an official split: 8 train / 2 val / 2 test)" in text, nb.name
