"""One exception type for every problem a user can fix, so the CLI can report it cleanly."""

from __future__ import annotations

from pathlib import Path


class InstlibError(Exception):
    """A user-facing error: bad input, missing weights, refused overwrite.

    ``path`` names the file or folder at fault; the message says what is wrong with it.
    """

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        self.message = message
        super().__init__(f"{path}: {message}" if path is not None else message)


class DataError(InstlibError):
    """A data file or folder that does not follow the folder format."""


class ArgumentError(InstlibError, ValueError):
    """An argument outside its valid range (also a ``ValueError``, for callers that catch those)."""


class WriteError(InstlibError):
    """An output that cannot be written: disk full, permission denied, read-only file system."""
