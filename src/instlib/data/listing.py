"""Which files of a folder are data: hidden files and operating-system clutter are not.

Copies made on Windows and macOS carry files nobody put there on purpose: ``Thumbs.db`` and
``desktop.ini`` (Windows Explorer), ``.DS_Store``, ``._<name>`` resource forks and whole
``__MACOSX/`` trees (macOS and its zip archiver). Every place that lists a folder skips them, as it
skips hidden files (which include the atomic writer's temporary files).
"""

from __future__ import annotations

from pathlib import Path

OS_FILES = frozenset({"thumbs.db", "ehthumbs.db", "desktop.ini", ".ds_store"})
OS_FOLDERS = frozenset({"__macosx"})


def is_junk(path: str | Path) -> bool:
    """True for a hidden file or folder, or one that an operating system leaves behind."""
    name = Path(path).name.lower()
    return name.startswith(".") or name in OS_FILES or name in OS_FOLDERS


def data_files(folder: str | Path) -> list[Path]:
    """The entries of ``folder`` that are not junk, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if not is_junk(p))


def junk_files(folder: str | Path) -> list[Path]:
    """The entries of ``folder`` that :func:`data_files` skips, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if is_junk(p))


def walk_data_files(root: str | Path) -> list[Path]:
    """Every file under ``root`` that neither is junk nor lies inside a junk folder, sorted."""
    root = Path(root)
    return sorted(p for p in root.rglob("*")
                  if p.is_file() and not any(is_junk(part) for part in p.relative_to(root).parts))
