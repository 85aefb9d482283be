"""The inputs of one counting run: list the folders, leave out leaks, decode every image once.

Everything is listed and decoded before any training, so bad input fails in seconds, not after an
hour. Training images drawn from a test image (their folder manifest's ``origin``,
:mod:`instlib.data.provenance`) are left out and counted. The validation images are a
count-stratified ``val_fraction`` of the real labelled images (the fine-tune folder, or the training
folders when there is no fine-tuning), or the ``val`` images of an official split, and are never
trained on.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from instlib.config.count import TrainConfig
from instlib.count.bank import ImageBank, load_bank, scale_intensity
from instlib.count.mix import get_mix
from instlib.count.predict import folder_samples
from instlib.data.folder import Sample, list_samples
from instlib.data.provenance import drawn_from, sample_origins
from instlib.data.splits import split_part, stratified_kfold
from instlib.data.subsets import stains_of
from instlib.errors import DataError, InstlibError


@dataclass
class RunData:
    """The decoded images of one run. ``mix_with`` is unlabelled under dacs."""

    train: ImageBank
    val: ImageBank
    test: ImageBank
    finetune: ImageBank | None = None
    mix_with: ImageBank | None = None
    describe: dict = field(default_factory=dict)  # where the images came from, for run.json / metrics.json
    excluded: int = 0  # training images left out because they were drawn from a test image


def validation_split(counts: Sequence[float], fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train_idx, val_idx)``: one fold of a count-stratified k-fold with k = round(1 / fraction)."""
    k = max(2, round(1 / fraction))
    if len(counts) < k:
        raise DataError(f"{len(counts)} labelled images are too few to hold out a validation set of "
                        f"{fraction:.0%}; need at least {k}")
    return stratified_kfold(counts, n_folds=k, seed=seed)[0]


def source_samples(dirs: Sequence[str | Path], max_images: int | None = None, seed: int = 42) -> list[Sample]:
    """The samples of ``dirs``; at most ``max_images`` of them (a subset drawn with ``seed``)."""
    samples = [s for d in dirs for s in list_samples(d)]
    if max_images is None or max_images >= len(samples):
        return samples
    keep = np.sort(np.random.default_rng(seed).choice(len(samples), max_images, replace=False))
    return [samples[i] for i in keep]


def fingerprint(bank: ImageBank | None) -> dict | None:
    if bank is None:
        return None
    digest = hashlib.sha1("\n".join(str(Path(p).resolve()) for p in bank.paths).encode()).hexdigest()
    return {"images": len(bank), "sha1": digest}


def stains(bank: ImageBank) -> list[str] | None:
    """Each image's stain from its folder's manifest (``stain`` column); None when a folder has none."""
    folders: dict[Path, dict[str, str]] = {}
    for path in bank.paths:
        folder = Path(path).parent.parent
        if folder not in folders:
            try:
                folders[folder] = stains_of(folder)
            except DataError:  # no manifest, or no stain column: nothing to group by
                return None
    return [folders[Path(p).parent.parent].get(n, "") for n, p in zip(bank.names, bank.paths)]


def without_leaks(samples: list[Sample], test_names: Sequence[str]) -> tuple[list[Sample], int]:
    """``samples`` less those drawn from a test image (by their folder's ``origin``), and how many those were."""
    leaks = drawn_from(sample_origins(samples), test_names)
    return [s for s, leak in zip(samples, leaks) if not leak], int(leaks.sum())


def load_run_data(train_dirs: Sequence[str | Path], test_dir: str | Path, config: TrainConfig, *,
                  finetune_dir: str | Path | None = None, mix_with: str | Path | None = None,
                  progress: bool = False) -> RunData:
    """List and decode every input of a run up front, so bad input fails before any training.

    Training images drawn from a test image are left out. Under ``config.split == "official"`` the
    real folder (``finetune_dir``, else the one training folder) trains on its ``train`` images and
    selects on its ``val`` images, and a test folder that is the real folder tests on its ``test`` images.
    """
    mix = get_mix(config.mix)
    if not train_dirs:
        raise InstlibError("no training folder given (--train)")
    if mix.needs_target and mix_with is None:
        raise InstlibError(f"--mix {config.mix} needs --mix-with DIR (the target-domain images)")
    real_dir = Path(finetune_dir if finetune_dir is not None else train_dirs[0])
    official = config.split == "official"
    if official and finetune_dir is None and len(train_dirs) > 1:
        raise InstlibError("--split official needs one real folder: give it as --finetune, or as the only --train")
    test_s = list_samples(test_dir)
    if official and Path(test_dir).resolve() == real_dir.resolve():
        test_s = [test_s[i] for i in split_part(real_dir, [s.name for s in test_s], "test")]
    train_s, excluded = without_leaks(source_samples(train_dirs, config.max_images, config.seed),
                                      [s.name for s in test_s])
    if not train_s:
        raise DataError(f"every training image was drawn from a test image of {test_dir} (manifest 'origin'); "
                        "nothing is left to train on", train_dirs[0])
    fine_s = list_samples(finetune_dir) if finetune_dir is not None else None
    if mix.needs_target:
        mix_s, mix_labelled = folder_samples(Path(mix_with))
        if mix.target_labelled and not mix_labelled:
            raise DataError(f"has no points/ folder, which --mix {config.mix} needs (dacs does not)", mix_with)

    real_s = fine_s if fine_s is not None else train_s
    real = load_bank(real_s, progress=progress, desc="decode real")
    if official:
        fit_idx, val_idx = (split_part(real_dir, real.names, part) for part in ("train", "val"))
    else:
        fit_idx, val_idx = validation_split(real.counts().numpy(), config.val_fraction, config.seed)
    val, real_fit = real.subset(val_idx), real.subset(fit_idx)
    train = real_fit if fine_s is None else load_bank(train_s, progress=progress, desc="decode train")
    target = None
    if mix.needs_target:
        real_dirs = [finetune_dir] if fine_s is not None else list(train_dirs)
        same = len(real_dirs) == 1 and Path(mix_with).resolve() == Path(real_dirs[0]).resolve()
        # Mixing with the real folder itself: leave its validation images out, as for training.
        target = real_fit if same else load_bank(mix_s, labelled=mix.target_labelled, progress=progress,
                                                 desc="decode mix-with")
        if not mix.target_labelled:
            target = target.without_labels()
    return RunData(train=train, val=val, test=load_bank(test_s, progress=progress, desc="decode test"),
                   finetune=real_fit if fine_s is not None else None, mix_with=target, excluded=excluded,
                   describe={"train": [str(d) for d in train_dirs], "test": str(test_dir),
                             "finetune": None if finetune_dir is None else str(finetune_dir),
                             "mix_with": None if mix_with is None else str(mix_with)})


def scaled(data: RunData, percentile: float | None) -> RunData:
    """``data`` with every bank's images brought to one brightness scale (see :func:`instlib.count.bank.scale_intensity`)."""
    if percentile is None:
        return data
    return replace(data, **{k: scale_intensity(getattr(data, k), percentile) if getattr(data, k) is not None else None
                            for k in ("train", "val", "test", "finetune", "mix_with")})
