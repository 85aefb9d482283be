"""One counting run: pre-train on source folders, fine-tune on real images, test on held-out real images.

Protocol (the paper's): stage ``pretrain`` trains on the ``--train`` folders (mixed with
``mix_with`` under ``cutmix``/``dacs``); stage ``finetune`` trains on the real folder. Each stage
keeps one of its trained epochs (never its starting weights: the authors' ``min_loss = inf``), the
one with the lowest validation MAE or the last one (the recipe's ``keep``), and the next stage
starts from it. Every epoch's validation MAE (over the crop-size tiles of the validation images,
see ``_validate``) is recorded either way. The validation images are a
count-stratified ``val_fraction`` of the real labelled images (the fine-tune folder, or the training
folders when there is no fine-tuning), or the ``val`` images of an official split, and are never
trained on. Without ``finetune`` there is one stage, ``train``. Training images drawn from a test
image (manifest ``origin``) are left out and counted. The selected model is then tested on the test
folder: whole-image counts by tiling, and centre-crop counts as in the reference. The training
settings come from a recipe (:mod:`instlib.count.recipes`).

A run folder holds ``run.json`` (settings and inputs), ``checkpoint.pt`` while it runs (a killed
run resumes from its last finished epoch), and at the end ``model.safetensors``,
``metrics.json``, ``predictions.csv`` and ``history.csv``.
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from instlib.count.backbone import check_backbone
from instlib.count.metrics import score
from instlib.count.mix import get_mix
from instlib.count.model import HEADS, NORMS, CountModel, ModelSpec, save_model
from instlib.count.pipeline import (ImageBank, Jitter, cell_sigma, channel_stats, concat_banks, epoch_indices,
                                    load_bank, make_batch, scale_intensity, steps_per_epoch)
from instlib.count.predict import (MODEL_FILE, check_channels, count_bank, folder_samples, tile_counts, true_counts,
                                   true_tile_counts, whole_image_evaluation)
from instlib.count.recipes import KEEP, RECIPE_FIELDS, SCHEDULES, get_recipe
from instlib.count.runtime import as_input, autocast, pick_device, seed_everything
from instlib.data.atomic import atomic_open, atomic_path
from instlib.data.folder import Sample, list_samples
from instlib.data.provenance import drawn_from, sample_origins
from instlib.data.splits import split_part, stratified_kfold
from instlib.errors import DataError, InstlibError

RUN_FILE, METRICS_FILE, PREDICTIONS_FILE, HISTORY_FILE, CHECKPOINT_FILE = (
    "run.json", "metrics.json", "predictions.csv", "history.csv", "checkpoint.pt")

#: How the real images are split: ``stratified`` draws count-stratified parts (folds, validation
#: images); ``official`` takes the ``split`` column (train / val / test) of the real folder's manifest.
SPLITS = ("stratified", "official")
AUTO_SIGMA = "auto"  # TrainConfig.sigma: measured on the real training images


@dataclass
class TrainConfig:
    """Settings of one run. Fields left at ``None`` come from ``recipe`` (see :mod:`instlib.count.recipes`)."""

    model: str = "efficientnet_b0"  # any timm model; test_efficientnet for quick tests
    pretrained: bool = True  # ImageNet weights (needs them cached or internet access)
    recipe: str = "instlib"  # authors | instlib (see instlib.count.recipes)
    epochs: int | None = None  # of the first stage (pre-training, or training when there is no fine-tuning)
    finetune_epochs: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    crop_size: int | None = None
    seed: int = 42
    mix: str = "none"  # none | cutmix | dacs (see instlib.count.mix)
    mix_prob: float | None = None  # chance that a sample gets a rectangle; None: the strategy's default
    norm: str | None = None  # data (statistics of the real training images) | idcia | imagenet
    schedule: str | None = None  # poly | step | steplr10 | constant, per stage
    drop_rate: float | None = None  # dropout before the count head
    drop_path_rate: float | None = None  # stochastic depth of the backbone
    mean_count_bias: bool | None = None  # start the head's bias at the mean crop count
    split: str = "stratified"  # stratified (count-stratified parts) | official (the manifest's split column)
    zero_keep: float = 0.25  # chance that a training crop without cells is kept
    # An epoch is this many random crops, however many images there are: ten images and a thousand
    # get the same number of steps. 0: passes over the images, crops_per_image each.
    crops_per_epoch: int | None = None
    crops_per_image: int = 1  # crops per image and epoch when crops_per_epoch is 0
    keep: str | None = None  # the epoch each stage keeps: best (lowest validation MAE) | last
    max_steps: int | None = None  # cap on steps per epoch
    max_images: int | None = None  # use at most this many images of the training folders (seeded subset)
    val_fraction: float = 0.2
    head: str | None = None  # regression (the paper's pooled count) | density (U-Net density map; see count.model)
    density: bool | None = None  # regression head: add the 1x1 density helper and its loss (dacs needs one)
    # Density head: std in pixels of the Gaussians of the target maps; auto: the cells' blob scale measured on the
    # real training images at their points (pipeline.cell_sigma), so the targets are as wide as the cells.
    sigma: float | str = AUTO_SIGMA
    intensity_percentile: float | None = None  # scale each image so this percentile is 255 (None: as stored)
    jitter: bool = True  # colour jitter (brightness/contrast/saturation 0.2, hue 0.1)
    eval_batch_size: int = 32
    channels_last: bool = True
    amp: bool = True  # bf16 autocast on GPUs

    def __post_init__(self) -> None:
        recipe = get_recipe(self.recipe)
        for name in RECIPE_FIELDS:
            if getattr(self, name) is None:
                setattr(self, name, getattr(recipe, name))

    def validate(self) -> TrainConfig:
        """Check choices and ranges; returns self."""
        mix = get_mix(self.mix)
        if self.head not in HEADS:
            raise InstlibError(f"unknown counting head '{self.head}'; choose one of {', '.join(HEADS)}")
        if mix.needs_density and not (self.head == "density" or self.density):
            # Switching a density loss on for the mixing runs alone would confound the comparison.
            raise InstlibError(f"mix '{self.mix}' labels target images with the model's density: use head='density' "
                               "(--head density) or density=True (--density) for every run it is compared with, "
                               "so all train with the same loss")
        if self.split not in SPLITS:
            raise InstlibError(f"unknown split '{self.split}'; choose one of {', '.join(SPLITS)}")
        if self.sigma != AUTO_SIGMA and not (isinstance(self.sigma, (int, float)) and self.sigma > 0):
            raise InstlibError(f"sigma must be a number of pixels > 0 or '{AUTO_SIGMA}', got {self.sigma!r}")
        if not 0 < (self.intensity_percentile or 50) <= 100:
            raise InstlibError("need 0 < intensity_percentile <= 100")
        if self.norm not in ("data", *NORMS):
            raise InstlibError(f"unknown normalisation '{self.norm}'; choose data, {', '.join(NORMS)}")
        if self.keep not in KEEP:
            raise InstlibError(f"unknown epoch choice '{self.keep}'; choose one of {', '.join(KEEP)}")
        if self.schedule not in SCHEDULES:
            raise InstlibError(f"unknown schedule '{self.schedule}'; choose one of {', '.join(SCHEDULES)}")
        for name in ("epochs", "batch_size", "crop_size", "crops_per_image", "eval_batch_size"):
            if getattr(self, name) < 1:
                raise InstlibError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("max_steps", "max_images"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise InstlibError(f"{name} must be at least 1 (or None for no cap), got {getattr(self, name)}")
        if self.crops_per_epoch < 0:
            raise InstlibError(f"crops_per_epoch must be at least 0 (0: passes over the images), got {self.crops_per_epoch}")
        if self.finetune_epochs < 0 or not 0 < self.val_fraction < 1 or not 0 <= self.zero_keep <= 1:
            raise InstlibError("need finetune_epochs >= 0, 0 < val_fraction < 1 and 0 <= zero_keep <= 1")
        if self.mix_prob is not None and not 0 <= self.mix_prob <= 1:
            raise InstlibError(f"mix_prob must lie in [0, 1], got {self.mix_prob}")
        if not (0 <= self.drop_rate < 1 and 0 <= self.drop_path_rate < 1):
            raise InstlibError(f"drop_rate and drop_path_rate must lie in [0, 1), got {self.drop_rate}, "
                               f"{self.drop_path_rate}")
        return self


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


@dataclass
class Stage:
    name: str
    bank: ImageBank
    epochs: int
    target: ImageBank | None = None  # mixing partner


# ---------------------------------------------------------------- inputs


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


def _fingerprint(bank: ImageBank | None) -> dict | None:
    if bank is None:
        return None
    digest = hashlib.sha1("\n".join(str(Path(p).resolve()) for p in bank.paths).encode()).hexdigest()
    return {"images": len(bank), "sha1": digest}


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


def _scaled(data: RunData, percentile: float | None) -> RunData:
    """``data`` with every bank's images brought to one brightness scale (see ``pipeline.scale_intensity``)."""
    if percentile is None:
        return data
    return replace(data, **{k: scale_intensity(getattr(data, k), percentile) if getattr(data, k) is not None else None
                            for k in ("train", "val", "test", "finetune", "mix_with")})


# ---------------------------------------------------------------- run folder


def read_json(path: Path) -> dict | None:
    """The JSON object in ``path``, or None if it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_json(path: Path, obj: dict) -> None:
    """Write ``obj`` as JSON, atomically."""
    with atomic_open(path, "w") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True)


def _claim(out: Path, stamp: dict) -> dict | None:
    """Make ``out`` this run's folder; returns the finished metrics if the same run already completed."""
    if out.exists() and not out.is_dir():
        raise DataError("exists and is not a folder", out)
    previous = read_json(out / RUN_FILE)
    if previous is not None and previous != json.loads(json.dumps(stamp)):
        diff = sorted(k for k in set(previous.get("config", {})) | set(stamp["config"])
                      if previous.get("config", {}).get(k) != stamp["config"].get(k))
        what = f"settings differ in {diff}" if diff else "its inputs differ"
        raise DataError(f"holds another run ({what}); choose another --out or delete the folder", out)
    if previous is None and out.is_dir() and any(not p.name.startswith(".") for p in out.iterdir()):
        raise DataError("holds files that are not an instlib counting run; choose another --out", out)
    if previous is not None and (out / METRICS_FILE).is_file():
        return read_json(out / METRICS_FILE)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / RUN_FILE, stamp)
    return None


def _save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint means: start afresh, say so
        raise DataError(f"cannot be read ({exc}); delete it to restart the run from scratch", path) from exc


# ---------------------------------------------------------------- training


def _mean_crop_count(bank: ImageBank, size: int) -> float:
    """Expected count of a random crop, assuming cells spread evenly over each image."""
    shapes = bank.shapes.double()
    frac = shapes.clamp(max=size).prod(1) / shapes.prod(1)
    return float((bank.counts() * frac).mean())


def _resolve_sigma(config: TrainConfig, real: ImageBank) -> TrainConfig:
    """``config`` with ``sigma="auto"`` replaced by the blob scale of the cells of the real training images."""
    if config.sigma != AUTO_SIGMA or config.head != "density":
        return config
    sigma = cell_sigma(real)
    if sigma is None:
        raise DataError("the real training images have no annotated cells to measure the width of the density "
                        "targets at; give it in pixels (--sigma)", Path(real.paths[0]).parent)
    return replace(config, sigma=round(sigma, 2))


def _build_model(data: RunData, config: TrainConfig) -> CountModel:
    real = data.finetune if data.finetune is not None else data.train
    if config.norm == "data":
        # The model is deployed on real images, so their statistics normalise every stage.
        mean, std = channel_stats(concat_banks([real, data.val]))
    else:
        mean, std = NORMS[config.norm]
    spec = ModelSpec(backbone=config.model, channels=concat_banks([real, data.val]).channels, mean=mean, std=std,
                     crop_size=config.crop_size, head=config.head,
                     **({"sigma": config.sigma} if config.head == "density" else {}),  # the regressor has dot targets
                     intensity_percentile=config.intensity_percentile,
                     density=config.head == "regression" and config.density,
                     drop_rate=config.drop_rate, drop_path_rate=config.drop_path_rate)
    model = CountModel(spec, pretrained=config.pretrained)
    if config.mean_count_bias:
        model.init_count(_mean_crop_count(data.train, config.crop_size))
    return model


def make_optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Adam over every weight with the config's learning rate and weight decay (one per stage)."""
    return torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _stages(data: RunData, config: TrainConfig) -> list[Stage]:
    mix = get_mix(config.mix)
    target = None
    if mix.needs_target:
        if data.mix_with is None:
            raise InstlibError(f"mix '{config.mix}' needs target-domain images to mix with (mix_with)")
        # Strategies that must not see target labels get a bank that has none.
        target = data.mix_with if mix.target_labelled else data.mix_with.without_labels()
    if data.finetune is None:
        return [Stage("train", data.train, config.epochs, target)]
    stages = [Stage("pretrain", data.train, config.epochs, target)]
    if config.finetune_epochs > 0:
        stages.append(Stage("finetune", data.finetune, config.finetune_epochs))
    return stages


def _validate(model: CountModel, val: ImageBank, config: TrainConfig, device: torch.device) -> float:
    """MAE of the counts of the ``crop x crop`` tiles of the validation images (GAME at tile scale).

    Not of whole images: with a few validation images, over- and under-counted tiles of one image
    cancel, and an epoch whose tiles are all wrong can score best by luck (as the authors' code,
    which validates on crops). For images no larger than a crop, the two are the same.
    """
    pred = tile_counts(model, val, batch_size=config.eval_batch_size, device=device, amp=config.amp,
                       channels_last=config.channels_last)
    true = true_tile_counts(val, config.crop_size)
    return float(np.mean(np.abs(np.concatenate([p.ravel() for p in pred]) - np.concatenate([t.ravel() for t in true]))))


def _fit(model: CountModel, data: RunData, config: TrainConfig, out: Path, device: torch.device, gen, progress
         ) -> tuple[list[dict], float]:
    """Train all stages with per-epoch checkpoints; leaves the selected weights in ``model``.

    Returns the history and the seconds spent before a resume (0 for an uninterrupted run).
    """
    tic = time.perf_counter()
    mix = get_mix(config.mix)
    prob = config.mix_prob if config.mix_prob is not None else mix.default_prob
    jitter = Jitter() if config.jitter else None
    sigma = config.sigma if config.head == "density" else None  # Gaussian targets; the regressor takes dot maps
    ckpt_path = out / CHECKPOINT_FILE
    ckpt = _load_checkpoint(ckpt_path)
    history: list[dict] = ckpt["history"] if ckpt else []
    before = float(ckpt["elapsed"]) if ckpt else 0.0
    if ckpt:
        gen.set_state(ckpt["gen"])
        torch.set_rng_state(ckpt["torch_rng"])

    for s, stage in enumerate(_stages(data, config)):
        if ckpt and s < ckpt["stage"]:
            continue
        opt = make_optimizer(model, config)
        steps = _steps(len(stage.bank), config)
        # As the authors' min_loss = inf: a trained epoch always wins, so a stage never returns its start.
        best, best_mae, best_epoch, start = None, math.inf, 0, 0
        if ckpt and s == ckpt["stage"]:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            best, best_mae, best_epoch, start = ckpt["best"], ckpt["best_mae"], ckpt["best_epoch"], ckpt["epoch"]
        else:  # epoch 0: the weights the stage starts from, for the history only
            history.append({"stage": stage.name, "epoch": 0, "train_loss": math.nan,
                            "val_mae": _validate(model, data.val, config, device), "lr": math.nan, "seconds": 0.0})
        strategy = mix if stage.target is not None else get_mix("none")
        bar = tqdm(range(start, stage.epochs), desc=stage.name, unit="epoch", disable=not progress,
                   initial=start, total=stage.epochs, leave=False)
        for epoch in bar:
            epoch_tic = time.perf_counter()
            model.train()
            src_idx = epoch_indices(len(stage.bank), config.batch_size, gen,
                                    crops_per_image=config.crops_per_image, steps=steps)
            tgt_idx = (epoch_indices(len(stage.target), config.batch_size, gen, steps=steps)
                       if stage.target is not None else [None] * steps)
            losses = []
            for i, (si, ti) in enumerate(zip(src_idx, tgt_idx)):
                for group in opt.param_groups:
                    group["lr"] = config.lr * SCHEDULES[config.schedule](epoch + i / steps, stage.epochs)
                source = make_batch(stage.bank, si, config.crop_size, gen, device=device,
                                    zero_keep=config.zero_keep, jitter=jitter, sigma=sigma)
                source.images = as_input(source.images, config.channels_last)
                target = None
                if ti is not None:
                    target = make_batch(stage.target, ti, config.crop_size, gen, device=device,
                                        zero_keep=config.zero_keep, jitter=jitter, sigma=sigma)
                    target.images = as_input(target.images, config.channels_last)
                with autocast(device, config.amp):
                    loss = strategy.loss(model, source, target, gen, prob)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(loss.item())
            val_mae = _validate(model, data.val, config, device)
            if KEEP[config.keep](val_mae, best_mae):
                best, best_mae, best_epoch = _state(model), val_mae, epoch + 1
            history.append({"stage": stage.name, "epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                            "val_mae": val_mae, "lr": opt.param_groups[0]["lr"],
                            "seconds": time.perf_counter() - epoch_tic})
            bar.set_postfix(loss=f"{np.mean(losses):.3g}", val_mae=f"{val_mae:.3g}", kept=f"{best_mae:.3g}")
            _write_history(out, history)
            _save_checkpoint(ckpt_path, {
                "stage": s, "epoch": epoch + 1, "model": _state(model), "optimizer": opt.state_dict(),
                "best": best, "best_mae": best_mae, "best_epoch": best_epoch, "history": history,
                "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                "elapsed": before + time.perf_counter() - tic})
        model.load_state_dict(best)
        for row in history:
            if row["stage"] == stage.name:
                row["selected"] = row["epoch"] == best_epoch
        ckpt = None
    return history, before


def _steps(n_images: int, config: TrainConfig) -> int:
    """Steps per epoch: ``crops_per_epoch`` crops, or passes over the images; capped by ``max_steps``."""
    if config.crops_per_epoch:
        steps = max(1, math.ceil(config.crops_per_epoch / config.batch_size))
    else:
        steps = steps_per_epoch(n_images, config.batch_size, config.crops_per_image)
    return min(steps, config.max_steps or steps)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}


def _write_history(out: Path, history: list[dict]) -> None:
    df = pd.DataFrame(history)
    df["selected"] = df["selected"].fillna(False).astype(bool) if "selected" in df else False
    with atomic_open(out / HISTORY_FILE, "w", newline="") as fh:
        df.to_csv(fh, index=False)


def run(data: RunData, out: str | Path, config: TrainConfig, *, progress: bool = True,
        device: str | None = None) -> dict:
    """Train, select and test one run on decoded images (see :func:`train_run`); returns the metrics."""
    config.validate()
    out = Path(out)
    data = _scaled(data, config.intensity_percentile)
    stamp = {"config": asdict(config), "inputs": {
        "train": _fingerprint(data.train), "val": _fingerprint(data.val), "test": _fingerprint(data.test),
        "finetune": _fingerprint(data.finetune), "mix_with": _fingerprint(data.mix_with),
        "folders": data.describe}}
    real = data.finetune if data.finetune is not None else data.train
    check_channels(data.test, concat_banks([real, data.val]).channels, "the real training images of this run are")
    done = _claim(out, stamp)
    if done is not None:
        return done
    config = _resolve_sigma(config, real)
    tic = time.perf_counter()
    dev = pick_device(device)
    gen = seed_everything(config.seed)
    model = _build_model(data, config).to(dev)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)

    history, before = _fit(model, data, config, out, dev, gen, progress)

    pred, pred_center = count_bank(model, data.test, batch_size=config.eval_batch_size, device=dev, amp=config.amp,
                                   channels_last=config.channels_last, progress=progress)
    true, true_center = true_counts(data.test, config.crop_size)
    predictions = pd.DataFrame({"name": data.test.names, "true": true, "pred": pred,
                                "true_center": true_center, "pred_center": pred_center})
    selected = {h["stage"]: h["epoch"] for h in history if h.get("selected")}
    metrics = {
        **score(true, pred),
        "evaluation": whole_image_evaluation(model.spec),
        "center": {**score(true_center, pred_center),
                   "evaluation": f"centre {config.crop_size}x{config.crop_size} crop (the reference's protocol)"},
        "selected_epochs": selected,
        "excluded": data.excluded,  # training images drawn from a test image, left out
        "wall_s": before + time.perf_counter() - tic,  # including the time before a resume
        "produced_by": {"config": asdict(config), "inputs": data.describe, "device": str(dev),
                        "torch": torch.__version__, "python": platform.python_version(),
                        "fingerprints": stamp["inputs"]},
    }
    save_model(model, out / MODEL_FILE)
    with atomic_open(out / PREDICTIONS_FILE, "w", newline="") as fh:
        predictions.to_csv(fh, index=False)
    _write_history(out, history)
    write_json(out / METRICS_FILE, metrics)
    (out / CHECKPOINT_FILE).unlink(missing_ok=True)
    return metrics


def train_run(train_dirs: Sequence[str | Path], test_dir: str | Path, out: str | Path, config: TrainConfig, *,
              finetune_dir: str | Path | None = None, mix_with: str | Path | None = None,
              progress: bool = True, device: str | None = None) -> dict:
    """Pre-train on ``train_dirs``, fine-tune on ``finetune_dir``, test on ``test_dir``; write the run to ``out``.

    Returns the metrics (also in ``out/metrics.json``). A finished run with the same settings
    is returned as is; an interrupted one resumes from its last epoch.
    """
    if isinstance(train_dirs, (str, Path)):
        train_dirs = [train_dirs]
    config.validate()
    check_backbone(config.model, config.pretrained)  # before minutes of decoding
    data = load_run_data(train_dirs, test_dir, config, finetune_dir=finetune_dir, mix_with=mix_with,
                         progress=progress)
    return run(data, out, config, progress=progress, device=device)


def with_overrides(config: TrainConfig, **changes) -> TrainConfig:
    """A copy of ``config`` with ``changes`` (``None`` values ignored), validated.

    A new ``recipe`` also brings its settings, except those ``config`` had set to other values than
    its old recipe's and those in ``changes``.
    """
    changes = {k: v for k, v in changes.items() if v is not None}
    if changes.get("recipe", config.recipe) != config.recipe:
        old = get_recipe(config.recipe)
        follow = {k: None for k in RECIPE_FIELDS if getattr(config, k) == getattr(old, k)}
        changes = {**follow, **changes}
    return replace(config, **changes).validate()
