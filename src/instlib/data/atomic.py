"""Atomic file writes (and JSON through them): a reader (or a killed run) never sees a half-written file.

The data goes to a hidden temporary file beside the target, ``.<name>.<8 random chars><suffix>``,
which is renamed onto the target only when it is complete. A run killed with ``kill -9`` cannot
remove its temporary file; :func:`sweep_temporaries` removes such leftovers, and only those.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from instlib.errors import WriteError

# tempfile.mkstemp's random part: 8 characters of [a-z0-9_].
_TEMP = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}(?P<suffix>(\.[^.]*)?)")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds.

    A failure to write (disk full, permission denied, read-only file system, ``path`` a folder)
    raises :class:`~instlib.errors.WriteError` naming ``path``; the temporary file is removed and an
    earlier ``path`` is left as it was.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # Hidden name (folder scans skip dot-files), same suffix (writers infer the format from it).
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    except OSError as exc:
        raise _write_error(exc, path) from exc
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files: give the permissions open() would
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        if exc.filename not in (None, tmp, str(path)):  # e.g. an input that could not be read
            raise
        raise _write_error(exc, path) from exc
    finally:
        tmp_path.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_error(exc: OSError, path: Path) -> WriteError:
    culprit = path if exc.filename is None or is_temporary(exc.filename) else exc.filename
    hint = "; free some space, then run the same command again" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else ""
    return WriteError(f"cannot be written: {exc.strerror or exc}{hint}", culprit)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs) -> Iterator[IO]:
    """``open()`` that writes to a temporary file and renames it into place on success."""
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_open(path, "wb") as fh:
        fh.write(data)


def write_json(path: str | Path, obj: Any, *, sort_keys: bool = True) -> Path:
    """Write ``obj`` as indented JSON, atomically (values JSON does not know, such as paths, as text)."""
    with atomic_open(path, "w") as fh:
        fh.write(json.dumps(obj, indent=2, sort_keys=sort_keys, default=str) + "\n")
    return Path(path)


def read_json(path: str | Path) -> Any:
    """The JSON in ``path``, or None when it is missing or unreadable (a file a killed run never finished)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_temporary(path: str | Path) -> bool:
    """True when ``path`` is named like a temporary file of :func:`atomic_path`."""
    m = _TEMP.fullmatch(Path(path).name)
    return bool(m) and Path(m["target"]).suffix == m["suffix"]


def sweep_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files that killed writers left in ``folder``; returns what was removed.

    Call it only where no other process is writing into ``folder`` at the same moment.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = sorted(p for p in folder.iterdir() if p.is_file() and is_temporary(p))
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
