"""Cross-validation and the experiment grid: sources x mixing x folds x seeds.

The real folder is split into ``folds`` count-stratified folds (shuffled with seed 42, the
paper's protocol; the fold split does not change with the training seed). For each fold the
held-out part is the test set, and the rest is the real training data. A run with source
``real`` trains on it alone; any other source pre-trains on its folders, mixed with the fold's
real training images under ``cutmix``/``dacs`` (unlabelled under ``dacs``), then fine-tunes on
them. Mixing needs a synthetic source, so ``real`` runs only with ``none``. With
``config.split == "official"`` the folds are replaced by the real folder's own split (manifest
column ``split``): one fold that tests on its ``test`` images and selects on its ``val`` images.

No leaks: a synthetic image whose ``origin`` (see :mod:`instlib.data.provenance`) is a test image
of the fold is left out of that fold's pre-training; ``results.csv`` counts them in ``excluded``.
Every run of the grid trains with the same loss (``config.density`` decides, never the mixing),
so the mixing variants differ in the mixing only.

Layout of ``out``: ``cv.json`` (settings), ``runs/<source>-<mix>-fold<k>-seed<s>/`` (one
:func:`instlib.count.train.run` folder each, plus ``result.json`` once finished),
``results.csv`` (one row per finished run) and ``summary.csv`` (mean and std per source and
mixing). Finished runs are skipped, so a killed grid resumes; ``shard=(i, n)`` runs every n-th
run, and any shard rebuilds ``results.csv`` from every finished run it finds.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from tqdm.auto import tqdm

from instlib.config.count import GridConfig, TrainConfig
from instlib.count.backbone import check_backbone
from instlib.count.bank import ImageBank, load_bank
from instlib.count.classical import MODEL as CLASSICAL_MODEL
from instlib.count.classical import fit_and_count
from instlib.count.inputs import RunData, source_samples, validation_split
from instlib.count.mix import get_mix
from instlib.count.train import run
from instlib.data.atomic import read_json, write_json
from instlib.data.folder import list_samples
from instlib.data.provenance import drawn_from, sample_origins
from instlib.data.shard import take_shard
from instlib.data.splits import split_part, stratified_kfold
from instlib.errors import DataError, InstlibError
from instlib.runs.folders import (CV_FILE, METRICS_FILE, PREDICTIONS_FILE, RESULT_FILE, RESULTS_FILE, RUNS_DIR,
                                  SUMMARY_FILE, claim, write_csv)

FOLD_SEED = 42
REAL = "real"
#: The classical baseline as a source of the grid: no training folders, no mixing, fitted per fold.
CLASSICAL = "classical"
BASELINES = (REAL, CLASSICAL)
METRICS = ("mae", "rmse", "acp", "mae_center", "rmse_center", "acp_center")
COLUMNS = ("source", "mix", "fold", "seed", *METRICS, "n_test", "epochs", "finetune_epochs", "model", "head", "sigma",
           "wall_s", "excluded", "pretrain_epoch", "final_epoch", "recipe", "split")


@dataclass(frozen=True)
class Job:
    """One cell of the grid."""

    source: str
    mix: str
    fold: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.source}-{self.mix}-fold{self.fold}-seed{self.seed}"


def jobs_of(sources: Sequence[str], mixes: Sequence[str], folds: int, seeds: Sequence[int]) -> list[Job]:
    """Every run of the grid, in a fixed order (the order shards are taken from)."""
    return [Job(src, mix, k, seed) for src in sources for mix in mixes for k in range(folds) for seed in seeds
            if not (src in BASELINES and mix != "none")]


def real_parts(names: Sequence[str], counts, real_dir: str | Path, split: str = "stratified", folds: int = 5
               ) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(train_idx, test_idx), ...]`` of the real images per fold.

    ``stratified``: ``folds`` count-stratified folds (seed :data:`FOLD_SEED`); ``official``: one fold,
    the manifest's ``test`` images held out and its ``train`` and ``val`` images the training part.
    """
    if split == "official":
        train = np.concatenate([split_part(real_dir, list(names), p) for p in ("train", "val")])
        return [(np.sort(train), split_part(real_dir, list(names), "test"))]
    try:
        return stratified_kfold(np.asarray(counts), n_folds=folds, seed=FOLD_SEED)
    except ValueError as exc:
        raise DataError(str(exc), real_dir) from exc


def training_names(real_dir: str | Path, *, split: str = "stratified", fold: int = 0, folds: int = 5) -> list[str]:
    """Names of the real images that fold ``fold`` may train on (everything but its test images).

    What style tokens, density categories and synthetic images must be built from for that fold's
    numbers to be free of test labels; the folds are :func:`cross_validate`'s.
    """
    samples = list_samples(real_dir)
    names = [s.name for s in samples]
    parts = real_parts(names, [s.count() for s in samples], real_dir, split, folds)
    if not 0 <= fold < len(parts):
        raise InstlibError(f"fold {fold} does not exist: the {split} split has {len(parts)} fold(s)")
    return [names[i] for i in parts[fold][0]]


def fold_data(real: ImageBank, parts: tuple[np.ndarray, np.ndarray, np.ndarray], source: ImageBank | None,
              mix: str) -> RunData:
    """The banks of one run from index arrays ``(fit, val, test)`` into ``real``."""
    fit, val, test = (real.subset(idx) for idx in parts)
    if source is None:
        return RunData(train=fit, val=val, test=test)
    strategy = get_mix(mix)
    target = None
    if strategy.needs_target:
        target = fit if strategy.target_labelled else fit.without_labels()
    return RunData(train=source, val=val, test=test, finetune=fit, mix_with=target)


def _fit_val(real: ImageBank, real_dir: Path, train_idx: np.ndarray, config: TrainConfig
             ) -> tuple[np.ndarray, np.ndarray]:
    """Fit and validation indices of a fold's training part: the official ones, or a stratified share."""
    if config.split == "official":
        return (split_part(real_dir, real.names, p) for p in ("train", "val"))
    fit_idx, val_idx = validation_split(real.counts().numpy()[train_idx], config.val_fraction, config.seed)
    return train_idx[fit_idx], train_idx[val_idx]


def real_folds(real_dir: Path, folds: int, split: str = "stratified", progress: bool = False
               ) -> tuple[ImageBank, list[tuple[np.ndarray, np.ndarray]]]:
    """The decoded real folder and its ``(train_idx, test_idx)`` parts per fold (see :func:`real_parts`)."""
    real = load_bank(list_samples(real_dir), progress=progress, desc="decode real")
    return real, real_parts(real.names, real.counts().numpy(), real_dir, split, folds)


def _results(out: Path) -> pd.DataFrame:
    rows = [read_json(p) for p in sorted((out / RUNS_DIR).glob(f"*/{RESULT_FILE}"))]
    df = pd.DataFrame([r for r in rows if r], columns=list(COLUMNS))
    return df.sort_values(["source", "mix", "fold", "seed"], kind="stable").reset_index(drop=True)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Per source and mixing, over training seeds: every metric of each seed on the test images of all its folds
    together, then the mean over seeds (``<metric>_mean``), their std (``_std``) and the half-width of a 95%
    t-interval (``_ci``; empty with one seed). Also ``runs``, ``seeds`` and the mean ``excluded`` per run.

    The spread is over seeds, not folds: folds differ in difficulty for every counter alike, so a spread
    over folds measures the folds more than the counter (paired comparisons: :mod:`instlib.count.compare`).
    """
    if results.empty:
        return pd.DataFrame(columns=["source", "mix", "runs"])
    keys = ["source", "mix"]
    n = results["n_test"].astype(float)
    squared = [m for m in METRICS if m.startswith("rmse")]  # an RMSE pools as the root of the mean square
    parts = pd.DataFrame({m: results[m].astype(float) ** (2 if m in squared else 1) * n for m in METRICS})
    per_seed = parts.assign(n=n, **{k: results[k] for k in [*keys, "seed"]}).groupby([*keys, "seed"]).sum()
    per_seed = per_seed[list(METRICS)].div(per_seed["n"], axis=0)
    per_seed[squared] = np.sqrt(per_seed[squared])
    g = per_seed.groupby(level=keys)
    out = g.agg(["mean", "std"])
    out.columns = [f"{m}_{stat}" for m, stat in out.columns]
    seeds = g.size()
    half = stats.t.ppf(0.975, (seeds - 1).clip(lower=1)) / np.sqrt(seeds)
    for m in METRICS:
        out[f"{m}_ci"] = (out[f"{m}_std"] * half).where(seeds > 1)
    by_run = results.groupby(keys)
    if "excluded" in results:
        out["excluded_mean"] = by_run["excluded"].mean()
    return out.assign(runs=by_run.size(), seeds=seeds).reset_index()


def _write_tables(out: Path) -> pd.DataFrame:
    results = _results(out)
    write_csv(out / RESULTS_FILE, results)
    write_csv(out / SUMMARY_FILE, summarize(results))
    return results


def cross_validate(real_dir: str | Path, out: str | Path, config: TrainConfig, grid: GridConfig = GridConfig(), *,
                   sources: Mapping[str, Sequence[str | Path]] | None = None, shard: tuple[int, int] | None = None,
                   progress: bool = True, device: str | None = None) -> pd.DataFrame:
    """Run the grid ``sources x grid.mixes x grid.folds x grid.seeds`` on ``real_dir``; returns (and writes)
    ``results.csv``.

    ``sources`` maps a name to the folders to pre-train on; ``"real"`` (with no folders) trains on
    the real training folds only, and ``"classical"`` (no folders) fits the classical baseline
    (:mod:`instlib.count.classical`) on each fold's training images. ``config.seed`` and ``config.mix`` are
    replaced per run.
    """
    sources = dict(sources or {REAL: []})
    for name, dirs in sources.items():
        if (name in BASELINES) != (not dirs):
            raise InstlibError(f"source '{name}': {' and '.join(BASELINES)} take no pre-training folders; every other source "
                               "needs at least one folder")
        if "-" in name or "/" in name:
            raise InstlibError(f"source name '{name}' may not contain '-' or '/' (it names run folders)")
    for m in grid.mixes:  # every variant's settings, before any run
        config.updated(mix=m)
    check_backbone(config.backbone, config.pretrained)
    out = Path(out)
    real_dir = Path(real_dir)
    real, parts = real_folds(real_dir, grid.folds, config.split, progress=progress)
    claim(out, CV_FILE, {"real": str(real_dir.resolve()), "folds": len(parts), "fold_seed": FOLD_SEED,
                         "config": {k: v for k, v in config.dump().items() if k not in ("seed", "mix")}},
          "cross-validation")
    jobs = take_shard(jobs_of(list(sources), list(grid.mixes), len(parts), list(grid.seeds)), shard)
    banks: dict[str, tuple[ImageBank, list]] = {}
    for job in tqdm(jobs, desc="cv", unit="run", disable=not progress):
        run_dir = out / RUNS_DIR / job.name
        if (run_dir / RESULT_FILE).is_file():
            continue
        if job.source == CLASSICAL:
            row = _classical_run(real, parts[job.fold], run_dir, job, config)
        else:
            row = _deep_run(real, real_dir, parts, job, config, sources, banks, run_dir, progress, device)
        write_json(run_dir / RESULT_FILE, row)
        _write_tables(out)
    return _write_tables(out)


def _deep_run(real: ImageBank, real_dir: Path, parts: list, job: Job, config: TrainConfig,
              sources: Mapping[str, Sequence[str | Path]], banks: dict, run_dir: Path, progress: bool,
              device: str | None) -> dict:
    """Train one deep run of the grid (pre-training on the source, minus its test-fold images); its row."""
    cfg = config.updated(seed=job.seed, mix=job.mix)
    train_idx, test_idx = parts[job.fold]
    source, excluded = None, 0
    if job.source != REAL:
        if job.source not in banks:
            samples = source_samples(sources[job.source], config.max_images, config.seed)
            banks[job.source] = (load_bank(samples, progress=progress, desc=f"decode {job.source}"),
                                 sample_origins(samples))
        bank, origin = banks[job.source]
        leaks = drawn_from(origin, [real.names[i] for i in test_idx])
        source, excluded = bank.subset(np.flatnonzero(~leaks)), int(leaks.sum())
        if not len(source):
            raise DataError(f"every image of source '{job.source}' was drawn from a test image of fold "
                            f"{job.fold}; nothing is left to pre-train on", sources[job.source][0])
    data = fold_data(real, (*_fit_val(real, real_dir, train_idx, cfg), test_idx), source, job.mix)
    data.excluded = excluded
    data.describe = {"real": str(real_dir), "source": job.source, "split": config.split,
                     "source_folders": [str(d) for d in sources[job.source]], "fold": job.fold,
                     "folds": len(parts)}
    metrics = run(data, run_dir, cfg, progress=progress, device=device)
    selected = list(metrics["selected_epochs"].items())
    return {"source": job.source, "mix": job.mix, "fold": job.fold, "seed": job.seed,
           **{m: metrics[m] for m in ("mae", "rmse", "acp")},
           **{f"{m}_center": metrics["center"][m] for m in ("mae", "rmse", "acp")},
           "n_test": metrics["n"], "epochs": cfg.epochs,
           "finetune_epochs": cfg.finetune_epochs if source is not None else 0,
           "model": cfg.backbone, "head": cfg.head, "wall_s": metrics["wall_s"], "excluded": excluded,
           "sigma": metrics["produced_by"]["config"]["sigma"] if cfg.head == "density" else None,
           "pretrain_epoch": metrics["selected_epochs"].get("pretrain"), "final_epoch": selected[-1][1],
           "recipe": cfg.recipe, "split": cfg.split}


def _classical_run(real: ImageBank, part: tuple[np.ndarray, np.ndarray], run_dir: Path, job: Job,
                   config: TrainConfig) -> dict:
    """The classical baseline on one fold: fitted on the fold's training images, counting its test images."""
    tic = time.perf_counter()
    train_idx, test_idx = part
    predictions, metrics = fit_and_count(real.subset(train_idx), real.subset(test_idx), crop_size=config.crop_size)
    write_csv(run_dir / PREDICTIONS_FILE, predictions)
    write_json(run_dir / METRICS_FILE, metrics)
    return {"source": CLASSICAL, "mix": job.mix, "fold": job.fold, "seed": job.seed,
            **{m: metrics[m] for m in ("mae", "rmse", "acp")},
            **{f"{m}_center": metrics["center"][m] for m in ("mae", "rmse", "acp")},
            "n_test": metrics["n"], "epochs": 0, "finetune_epochs": 0, "model": CLASSICAL_MODEL, "head": None,
            "wall_s": time.perf_counter() - tic, "excluded": 0, "recipe": None, "split": config.split}
