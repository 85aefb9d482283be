"""The training loop of one counting run: its stages, epochs of random crops, validation, checkpoints.

Stage ``pretrain`` trains on the source (mixed with the target-domain images under ``cutmix``/``dacs``,
:mod:`instlib.count.mix`); stage ``finetune`` trains on the real images; without fine-tuning there is
one stage, ``train``. Each stage keeps one of its trained epochs (never its starting weights: the
authors' ``min_loss = inf``), the one with the lowest validation MAE or the last one (the config's
``keep``), and the next stage starts from it. The validation MAE (over the crop-size tiles of the
validation images, see :func:`validate`) is recorded every ``val_every`` epochs and after the last;
``keep=best`` chooses among those epochs. With ``ema`` the weights validated and kept are an
exponential moving average of the trained ones (``torch.optim.swa_utils.AveragedModel``), restarted
with each stage.

After every epoch the weights, optimiser state, kept weights, history and random generators are saved
(``checkpoint.pt``, read back with ``weights_only=True``): a killed run resumes from its last finished
epoch and ends where an uninterrupted one does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm.auto import tqdm

from instlib.config.count import TrainConfig
from instlib.count.augment import Intensity, Jitter
from instlib.count.bank import ImageBank
from instlib.count.batches import epoch_indices, make_batch, steps_per_epoch
from instlib.count.inputs import RunData
from instlib.count.mix import get_mix
from instlib.count.model import CountModel
from instlib.count.predict import tile_counts, true_tile_counts
from instlib.count.runtime import as_input, autocast, grad_scaler
from instlib.count.schedules import KEEP, SCHEDULES
from instlib.data.atomic import atomic_path
from instlib.errors import DataError, InstlibError
from instlib.runs.folders import CHECKPOINT_FILE, HISTORY_FILE, write_csv


@dataclass
class Stage:
    name: str
    bank: ImageBank
    epochs: int
    target: ImageBank | None = None  # mixing partner


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


def validate(model: CountModel, val: ImageBank, config: TrainConfig, device: torch.device) -> float:
    """MAE of the counts of the ``crop x crop`` tiles of the validation images (GAME at tile scale).

    Not of whole images: with a few validation images, over- and under-counted tiles of one image
    cancel, and an epoch whose tiles are all wrong can score best by luck (as the authors' code,
    which validates on crops). For images no larger than a crop, the two are the same.
    """
    pred = tile_counts(model, val, batch_size=config.eval_batch_size, device=device, amp=config.amp,
                       channels_last=config.channels_last)
    true = true_tile_counts(val, config.crop_size)
    return float(np.mean(np.abs(np.concatenate([p.ravel() for p in pred]) - np.concatenate([t.ravel() for t in true]))))


def fit(model: CountModel, data: RunData, config: TrainConfig, out: Path, device: torch.device, gen, progress
         ) -> tuple[list[dict], float]:
    """Train all stages with per-epoch checkpoints; leaves the selected weights in ``model``.

    Returns the history and the seconds spent before a resume (0 for an uninterrupted run).
    """
    tic = time.perf_counter()
    mix = get_mix(config.mix)
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
        scaler = grad_scaler(device, config.amp)  # fp16 (GPUs below sm_80) needs its loss scaled; else a no-op
        steps = _steps(len(stage.bank), config)
        # As the authors' min_loss = inf: a trained epoch always wins, so a stage never returns its start.
        ema = _averaged(model, config.ema)
        best, best_mae, best_epoch, start = None, math.inf, 0, 0
        if ckpt and s == ckpt["stage"]:
            model.load_state_dict(ckpt["model"])
            opt.load_state_dict(ckpt["optimizer"])
            scaler.load_state_dict(ckpt.get("scaler", {}))
            if ema is not None:
                ema.load_state_dict(ckpt["ema"])
            best, best_mae, best_epoch, start = ckpt["best"], ckpt["best_mae"], ckpt["best_epoch"], ckpt["epoch"]
        else:  # epoch 0: the weights the stage starts from, for the history only
            history.append({"stage": stage.name, "epoch": 0, "train_loss": math.nan,
                            "val_mae": validate(model, data.val, config, device), "lr": math.nan, "seconds": 0.0})
        strategy = mix if stage.target is not None else get_mix("none")
        bar = tqdm(range(start, stage.epochs), desc=stage.name, unit="epoch", disable=not progress,
                   initial=start, total=stage.epochs, leave=False)
        for epoch in bar:
            epoch_tic = time.perf_counter()
            losses = _train_epoch(model, ema, stage, strategy, opt, scaler, epoch, steps, config, device, gen)
            kept_model = model if ema is None else ema.module
            val_mae = math.nan
            if (epoch + 1) % config.val_every == 0 or epoch + 1 == stage.epochs:
                val_mae = validate(kept_model, data.val, config, device)
                if KEEP[config.keep](val_mae, best_mae):
                    best, best_mae, best_epoch = _state(kept_model), val_mae, epoch + 1
            history.append({"stage": stage.name, "epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                            "val_mae": val_mae, "lr": opt.param_groups[0]["lr"],
                            "seconds": time.perf_counter() - epoch_tic})
            bar.set_postfix(loss=f"{np.mean(losses):.3g}", val_mae=f"{val_mae:.3g}", kept=f"{best_mae:.3g}")
            write_history(out, history)
            _save_checkpoint(ckpt_path, {
                "stage": s, "epoch": epoch + 1, "model": _state(model), "optimizer": opt.state_dict(), "scaler": scaler.state_dict(),
                **({"ema": _state(ema)} if ema is not None else {}),
                "best": best, "best_mae": best_mae, "best_epoch": best_epoch, "history": history,
                "gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                "elapsed": before + time.perf_counter() - tic})
        model.load_state_dict(best)
        for row in history:
            if row["stage"] == stage.name:
                row["selected"] = row["epoch"] == best_epoch
        ckpt = None
    return history, before


def _averaged(model: CountModel, decay: float) -> AveragedModel | None:
    """The moving average of ``model``'s weights and buffers with ``decay`` per step (None when 0)."""
    if not decay:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True)


def _train_epoch(model: CountModel, ema: AveragedModel | None, stage: Stage, strategy, opt: torch.optim.Optimizer,
                 scaler: torch.amp.GradScaler, epoch: int, steps: int, config: TrainConfig, device: torch.device,
                 gen: torch.Generator) -> list[float]:
    """One epoch of ``steps`` batches of random crops (with the stage's mixing partner); the batches' losses."""
    prob = config.mix_prob if config.mix_prob is not None else strategy.default_prob
    jitter = Jitter() if config.jitter else None
    intensity = Intensity() if config.intensity_augment else None
    sigma = config.sigma if config.head == "density" else None  # Gaussian targets; the regressor takes dot maps
    model.train()
    src_idx = epoch_indices(len(stage.bank), config.batch_size, gen, crops_per_image=config.crops_per_image,
                            steps=steps)
    tgt_idx = (epoch_indices(len(stage.target), config.batch_size, gen, steps=steps)
               if stage.target is not None else [None] * steps)
    losses = []
    for i, (si, ti) in enumerate(zip(src_idx, tgt_idx)):
        for group in opt.param_groups:
            group["lr"] = config.lr * SCHEDULES[config.schedule](epoch + i / steps, stage.epochs)
        source = make_batch(stage.bank, si, config.crop_size, gen, device=device, zero_keep=config.zero_keep,
                            point_crops=config.point_crops, jitter=jitter, intensity=intensity, sigma=sigma)
        source.images = as_input(source.images, config.channels_last)
        target = None
        if ti is not None:
            target = make_batch(stage.target, ti, config.crop_size, gen, device=device, zero_keep=config.zero_keep,
                                point_crops=config.point_crops, jitter=jitter, intensity=intensity, sigma=sigma)
            target.images = as_input(target.images, config.channels_last)
        with autocast(device, config.amp, scaler=scaler):
            loss = strategy.loss(model, source, target, gen, prob)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if ema is not None:
            ema.update_parameters(model)
        losses.append(loss.item())
    return losses


def _steps(n_images: int, config: TrainConfig) -> int:
    """Steps per epoch: ``crops_per_epoch`` crops, or passes over the images; capped by ``max_steps``."""
    if config.crops_per_epoch:
        steps = max(1, math.ceil(config.crops_per_epoch / config.batch_size))
    else:
        steps = steps_per_epoch(n_images, config.batch_size, config.crops_per_image)
    return min(steps, config.max_steps or steps)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone().cpu() for k, v in model.state_dict().items()}


def write_history(out: Path, history: list[dict]) -> None:
    """``history.csv``: one row per epoch of every stage, ``selected`` marking the epoch each stage kept."""
    df = pd.DataFrame(history)
    df["selected"] = df["selected"].fillna(False).astype(bool) if "selected" in df else False
    write_csv(out / HISTORY_FILE, df)
