"""Atomic writes leave files as an ordinary write would: the same permissions, no temporaries."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from instlib.data.atomic import atomic_open, atomic_path


def test_written_files_get_the_permissions_of_an_ordinary_write(tmp_path: Path):
    old = os.umask(0o022)
    try:
        with atomic_open(tmp_path / "a.csv", "w") as fh:
            fh.write("x\n")
        with atomic_path(tmp_path / "sub" / "b.png") as tmp:
            tmp.write_bytes(b"data")
        with open(tmp_path / "plain.txt", "w") as fh:  # what open() gives under the same umask
            fh.write("x")
        os.umask(0o077)
        with atomic_open(tmp_path / "private.csv", "w") as fh:
            fh.write("x\n")
    finally:
        os.umask(old)
    mode = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.rglob("*") if p.is_file()}
    assert mode == {"a.csv": 0o644, "b.png": 0o644, "plain.txt": 0o644, "private.csv": 0o600}
    assert (tmp_path / "a.csv").read_text() == "x\n" and (tmp_path / "sub" / "b.png").read_bytes() == b"data"
