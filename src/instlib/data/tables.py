"""The one reader for the CSV tables of the folder format and of this project's runs.

Manifests, split lists, ``results.csv``, ``summary.csv``, ``predictions.csv``: every cell is read as
the text it holds. Nothing is guessed, so the image names ``01``, ``007``, ``1e3``, ``0x1F``, ``NA``,
``nan``, ``None`` and ``True`` stay those strings, and an empty cell is ``""``. Only the columns a
caller names are converted: ``numbers`` to numbers (an empty cell to NaN), ``flags`` from
``True``/``False`` (as pandas writes booleans) to booleans. A cell that does not convert is a
:class:`~instlib.errors.DataError` naming the file, the column and the row.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Collection
from pathlib import Path

import numpy as np
import pandas as pd

from instlib.errors import DataError

#: Columns to convert: their names, or a test on a column's name.
Columns = Collection[str] | Callable[[str], bool]
_FLAGS = {"true": True, "false": False}


def read_rows(path: str | Path) -> list[list[str]]:
    """The non-blank rows of a CSV file, each a list of text cells (a byte-order mark is dropped)."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return [row for row in csv.reader(fh) if any(cell.strip() for cell in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot be read as CSV: {exc}", path) from exc


def read_table(path: str | Path, numbers: Columns = (), flags: Columns = ()) -> pd.DataFrame:
    """A CSV file with a header line as text columns, ``numbers`` and ``flags`` converted (see module docstring).

    Rows shorter than the header are filled with empty cells; longer rows and repeated column names
    are errors.
    """
    path = Path(path)
    rows = read_rows(path)
    if not rows:
        raise DataError("is empty; expected a header line naming its columns", path)
    header, body = rows[0], rows[1:]
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:
        raise DataError(f"names the column '{repeated[0]}' more than once", path)
    for i, row in enumerate(body, start=1):
        if len(row) > len(header):
            raise DataError(f"row {i} has {len(row)} cells, but the header names {len(header)} columns", path)
    cells = [row + [""] * (len(header) - len(row)) for row in body]
    return convert(pd.DataFrame(cells, columns=header, dtype=str), path, numbers, flags)


def convert(df: pd.DataFrame, path: str | Path, numbers: Columns = (), flags: Columns = ()) -> pd.DataFrame:
    """``df`` (text columns) with its ``numbers`` and ``flags`` columns converted; ``path`` names it in errors."""
    out = df.copy()
    for column in _chosen(df, numbers):
        text = df[column].str.strip()
        blank = text == ""
        values = pd.to_numeric(text.mask(blank), errors="coerce")
        _refuse(df[column], values.isna() & ~blank, "a number", path)
        out[column] = values
    for column in _chosen(df, flags):
        values = df[column].str.strip().str.lower().map(_FLAGS)
        _refuse(df[column], values.isna(), "True or False", path)
        out[column] = values.astype(bool)
    return out


def _chosen(df: pd.DataFrame, columns: Columns) -> list[str]:
    return [c for c in df.columns if (columns(c) if callable(columns) else c in columns)]


def _refuse(cells: pd.Series, bad: pd.Series, expected: str, path: str | Path) -> None:
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"row {row + 1}, column '{cells.name}': {cells.iloc[row]!r} is not {expected}", path)
