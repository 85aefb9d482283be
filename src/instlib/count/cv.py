"""Cross-validation and the experiment grid: sources x mixing x folds x seeds.

The real folder is split into ``folds`` count-stratified folds (shuffled with seed 42, the
paper's protocol; the fold split does not change with the training seed). For each fold the
held-out part is the test set, and the rest is the real training data. A run with source
``real`` trains on it alone; any other source pre-trains on its folders, mixed with the fold's
real training images under ``cutmix``/``dacs`` (unlabelled under ``dacs``), then fine-tunes on
them. Mixing needs a synthetic source, so ``real`` runs only with ``none``.

Layout of ``out``: ``cv.json`` (settings), ``runs/<source>-<mix>-fold<k>-seed<s>/`` (one
:func:`instlib.count.train.run` folder each, plus ``result.json`` once finished),
``results.csv`` (one row per finished run) and ``summary.csv`` (mean and std per source and
mixing). Finished runs are skipped, so a killed grid resumes; ``shard=(i, n)`` runs every n-th
run, and any shard rebuilds ``results.csv`` from every finished run it finds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd
from tqdm.auto import tqdm

from instlib.count.mix import get_mix
from instlib.count.model import check_backbone
from instlib.count.pipeline import ImageBank, load_bank
from instlib.count.train import RunData, TrainConfig, read_json, run, source_samples, validation_split, write_json
from instlib.data.atomic import atomic_open
from instlib.data.folder import list_samples
from instlib.data.splits import stratified_kfold
from instlib.errors import DataError, InstlibError

FOLD_SEED = 42
REAL = "real"
CV_FILE, RESULTS_FILE, SUMMARY_FILE, RESULT_FILE = "cv.json", "results.csv", "summary.csv", "result.json"
METRICS = ("mae", "rmse", "acp", "mae_center", "rmse_center", "acp_center")
COLUMNS = ("source", "mix", "fold", "seed", *METRICS, "n_test", "epochs", "finetune_epochs", "model", "wall_s")


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


def grid(sources: Sequence[str], mixes: Sequence[str], folds: int, seeds: Sequence[int]) -> list[Job]:
    """Every run of the grid, in a fixed order (the order shards are taken from)."""
    return [Job(src, mix, k, seed) for src in sources for mix in mixes for k in range(folds) for seed in seeds
            if not (src == REAL and mix != "none")]


def fold_data(real: ImageBank, split: tuple, source: ImageBank | None, mix: str, seed: int,
              val_fraction: float) -> RunData:
    """The banks of one run: test = the held-out fold; validation = a stratified part of the rest."""
    train_idx, test_idx = split
    real_train = real.subset(train_idx)
    fit_idx, val_idx = validation_split(real_train.counts().numpy(), val_fraction, seed)
    fit, val = real_train.subset(fit_idx), real_train.subset(val_idx)
    test = real.subset(test_idx)
    if source is None:
        return RunData(train=fit, val=val, test=test)
    strategy = get_mix(mix)
    target = None
    if strategy.needs_target:
        target = fit if strategy.target_labelled else fit.without_labels()
    return RunData(train=source, val=val, test=test, finetune=fit, mix_with=target)


def real_folds(real_dir: Path, folds: int, seed: int = FOLD_SEED, progress: bool = False
               ) -> tuple[ImageBank, list[tuple]]:
    """The decoded real folder and its count-stratified ``(train_idx, test_idx)`` folds."""
    real = load_bank(list_samples(real_dir), progress=progress, desc="decode real")
    try:
        return real, stratified_kfold(real.counts().numpy(), n_folds=folds, seed=seed)
    except ValueError as exc:
        raise DataError(str(exc), real_dir) from exc


def _results(out: Path) -> pd.DataFrame:
    rows = [read_json(p) for p in sorted((out / "runs").glob(f"*/{RESULT_FILE}"))]
    df = pd.DataFrame([r for r in rows if r], columns=list(COLUMNS))
    return df.sort_values(["source", "mix", "fold", "seed"], kind="stable").reset_index(drop=True)


def summarize(results: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (over folds and seeds) of every metric, per source and mixing."""
    if results.empty:
        return pd.DataFrame(columns=["source", "mix", "runs"])
    g = results.groupby(["source", "mix"], sort=True)
    out = g[list(METRICS)].agg(["mean", "std"])
    out.columns = [f"{m}_{stat}" for m, stat in out.columns]
    return out.assign(runs=g.size()).reset_index()


def _write_tables(out: Path) -> pd.DataFrame:
    results = _results(out)
    for name, df in ((RESULTS_FILE, results), (SUMMARY_FILE, summarize(results))):
        with atomic_open(out / name, "w", newline="") as fh:
            df.to_csv(fh, index=False)
    return results


def _claim(out: Path, stamp: dict) -> None:
    previous = read_json(out / CV_FILE)
    if previous is not None and previous != json.loads(json.dumps(stamp)):
        raise DataError("holds a cross-validation with other settings (real folder, folds or training "
                        "settings); choose another --out", out)
    if previous is None and out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise DataError("holds files that are not an instlib cross-validation; choose another --out", out)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / CV_FILE, stamp)


def cross_validate(real_dir: str | Path, out: str | Path, config: TrainConfig, *,
                   sources: Mapping[str, Sequence[str | Path]] | None = None, mixes: Sequence[str] = ("none",),
                   seeds: Sequence[int] = (42,), folds: int = 5, shard: tuple[int, int] | None = None,
                   progress: bool = True, device: str | None = None) -> pd.DataFrame:
    """Run the grid ``sources x mixes x folds x seeds`` on ``real_dir``; returns (and writes) ``results.csv``.

    ``sources`` maps a name to the folders to pre-train on; ``"real"`` (with no folders) trains on
    the real training folds only. ``config.seed`` and ``config.mix`` are replaced per run.
    """
    from instlib.runs.shard import take_shard

    sources = dict(sources or {REAL: []})
    for name, dirs in sources.items():
        if (name == REAL) != (not dirs):
            raise InstlibError(f"source '{name}': '{REAL}' means no pre-training folders; every other source "
                               "needs at least one folder")
        if "-" in name or "/" in name:
            raise InstlibError(f"source name '{name}' may not contain '-' or '/' (it names run folders)")
    for m in mixes:
        get_mix(m)
    config.validate()
    check_backbone(config.model, config.pretrained)
    out = Path(out)
    real_dir = Path(real_dir)
    real, splits = real_folds(real_dir, folds, progress=progress)
    _claim(out, {"real": str(real_dir.resolve()), "folds": folds, "fold_seed": FOLD_SEED,
                 "config": {k: v for k, v in asdict(config).items() if k not in ("seed", "mix")}})
    jobs = take_shard(grid(list(sources), list(mixes), folds, list(seeds)), shard)
    banks: dict[str, ImageBank] = {}
    for job in tqdm(jobs, desc="cv", unit="run", disable=not progress):
        run_dir = out / "runs" / job.name
        if (run_dir / RESULT_FILE).is_file():
            continue
        source = None
        if job.source != REAL:
            if job.source not in banks:
                samples = source_samples(sources[job.source], config.max_images, config.seed)
                banks[job.source] = load_bank(samples, progress=progress, desc=f"decode {job.source}")
            source = banks[job.source]
        cfg = replace(config, seed=job.seed, mix=job.mix)
        data = fold_data(real, splits[job.fold], source, job.mix, job.seed, config.val_fraction)
        data.describe = {"real": str(real_dir), "source": job.source,
                         "source_folders": [str(d) for d in sources[job.source]], "fold": job.fold, "folds": folds}
        metrics = run(data, run_dir, cfg, progress=progress, device=device)
        row = {"source": job.source, "mix": job.mix, "fold": job.fold, "seed": job.seed,
               **{m: metrics[m] for m in ("mae", "rmse", "acp")},
               **{f"{m}_center": metrics["center"][m] for m in ("mae", "rmse", "acp")},
               "n_test": metrics["n"], "epochs": cfg.epochs,
               "finetune_epochs": cfg.finetune_epochs if source is not None else 0,
               "model": cfg.model, "wall_s": metrics["wall_s"]}
        write_json(run_dir / RESULT_FILE, row)
        _write_tables(out)
    return _write_tables(out)
