"""Checksum tables in the ``sha256sum`` / ``md5sum`` format, to pin the exact files of a data set.

``instlib data import`` writes ``checksums.sha256`` into the folder it makes: one
``<hex digest>  <path relative to the source folder>`` line per file it read. Passing that file back
with ``--pin`` refuses any source whose files differ; ``sha256sum -c`` checks it too. The downloads
are pinned by MD5 tables committed beside this module (MD5 because that is what figshare publishes
for every file, so a table can be compared with the repository's listing).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

from instlib.data.atomic import atomic_open
from instlib.errors import DataError

CHECKSUMS = "checksums.sha256"
# Hex digits of a digest, by algorithm.
DIGEST_LENGTH = {"sha256": 64, "md5": 32}


def file_digest(path: str | Path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest (``sha256`` or ``md5``) of a file, read in chunks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checksum_table(root: str | Path, files: Iterable[Path]) -> dict[str, str]:
    """``{path relative to root (POSIX): sha256}`` for ``files``, sorted by path."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): file_digest(p) for p in sorted(set(files))}


def format_table(table: dict[str, str]) -> str:
    """The table as ``sha256sum`` prints it."""
    return "".join(f"{digest}  {name}\n" for name, digest in table.items())


def write_table(path: str | Path, table: dict[str, str]) -> Path:
    """Write the table atomically in the ``sha256sum`` format."""
    with atomic_open(path, "w", newline="\n") as fh:
        fh.write(format_table(table))
    return Path(path)


def read_table(path: str | Path, algorithm: str = "sha256") -> dict[str, str]:
    """Read a ``sha256sum`` (or ``md5sum``) file: ``<hex>  <name>`` or ``<hex> *<name>`` lines, ``#`` comments."""
    path, length = Path(path), DIGEST_LENGTH[algorithm]
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot be read as a {algorithm.upper()} table: {exc}", path) from exc
    table = {}
    for lineno, line in enumerate(lines, start=1):
        if not line.strip() or line.startswith("#"):
            continue
        digest, _, name = line.partition(" ")
        if len(digest) != length or not name or any(c not in "0123456789abcdef" for c in digest.lower()):
            raise DataError(f"line {lineno}: expected '<{length} hex digits>  <file name>', got {line!r}", path)
        table[name[1:] if name[:1] in " *" else name] = digest.lower()
    return table


def verify(table: dict[str, str], pinned: dict[str, str], root: str | Path, pin_file: str | Path) -> None:
    """Raise :class:`DataError` unless every pinned file is present with its pinned digest, and nothing else."""
    root = Path(root)
    for name, digest in pinned.items():
        if name not in table:
            raise DataError(f"pins {name}, which is missing or not imported from {root}", pin_file)
        if table[name] != digest:
            raise DataError(f"has SHA-256 {table[name]}; {pin_file} pins {digest}", root / name)
    extra = sorted(set(table) - set(pinned))
    if extra:
        raise DataError(f"holds {len(extra)} file(s) that {pin_file} does not pin, e.g. {extra[0]}", root)
