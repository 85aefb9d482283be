"""The folders counting writes: a run's and a cross-validation's file names, and claiming a folder for one.

A run folder (:func:`instlib.count.train.run`)::

    run.json            settings and inputs (its stamp)
    checkpoint.pt       while it runs: a killed run resumes from its last finished epoch
    model.safetensors   the kept weights          metrics.json     test metrics and what produced them
    predictions.csv     one row per test image    history.csv      one row per epoch

A cross-validation folder (:func:`instlib.count.cv.cross_validate`)::

    cv.json             settings (its stamp)
    runs/<job>/         one run folder per source x mix x fold x seed, plus result.json once finished
    results.csv         one row per finished run  summary.csv      mean and std per source and mixing
    comparisons.csv     paired comparisons of its rows (instlib.count.compare)

The writers (:mod:`instlib.count`) and the readers (:mod:`instlib.runs.results`) take the names from here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from instlib.data.atomic import atomic_open, read_json, write_json
from instlib.errors import DataError

RUN_FILE, CHECKPOINT_FILE, MODEL_FILE = "run.json", "checkpoint.pt", "model.safetensors"
METRICS_FILE, PREDICTIONS_FILE, HISTORY_FILE = "metrics.json", "predictions.csv", "history.csv"
CV_FILE, RUNS_DIR, RESULT_FILE = "cv.json", "runs", "result.json"
RESULTS_FILE, SUMMARY_FILE, COMPARISONS_FILE = "results.csv", "summary.csv", "comparisons.csv"


def claim(out: str | Path, stamp_file: str, stamp: dict, what: str) -> bool:
    """Make ``out`` the folder of one ``what`` (e.g. "counting run") described by ``stamp``.

    An absent or empty folder is created and stamped; one stamped with the same ``stamp`` is kept
    (returns True: the caller resumes or returns its results); anything else is refused.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise DataError("exists and is not a folder", out)
    previous = read_json(out / stamp_file)
    if previous is not None and previous != json.loads(json.dumps(stamp, default=str)):
        raise DataError(f"holds another {what} ({_difference(previous, stamp)}); choose another --out or delete "
                        "the folder", out)
    if previous is None and out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise DataError(f"holds files that are not an instlib {what}; choose another --out", out)
    out.mkdir(parents=True, exist_ok=True)
    if previous is None:
        write_json(out / stamp_file, stamp)
    return previous is not None


def _difference(previous: dict, stamp: dict) -> str:
    """Which settings (the stamps' ``config``) or other parts of two stamps differ, in words."""
    stamp = json.loads(json.dumps(stamp, default=str))
    old, new = previous.get("config", {}), stamp.get("config", {})
    changed = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if changed:
        return f"settings differ in {changed}"
    parts = sorted(k for k in set(previous) | set(stamp) if k != "config" and previous.get(k) != stamp.get(k))
    return f"its {', '.join(parts)} differ"


def write_csv(path: str | Path, table: pd.DataFrame) -> Path:
    """Write a table without its index, atomically."""
    with atomic_open(path, "w", newline="") as fh:
        table.to_csv(fh, index=False)
    return Path(path)
