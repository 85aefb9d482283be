"""One counting run: pre-train on source folders, fine-tune on real images, test on held-out real images.

Read it top to bottom: :func:`train_run` lists and decodes the inputs (:mod:`instlib.count.inputs`:
leaks left out, validation images held out), :func:`run` claims the run folder
(:mod:`instlib.runs.folders`), builds the model from the config, trains its stages
(:mod:`instlib.count.loop`), and tests the kept weights on the test folder: whole-image counts by
tiling, and centre-crop counts as in the reference (:mod:`instlib.count.predict`). Every setting
comes from one :class:`~instlib.config.count.TrainConfig` (its recipe fills what it leaves open).

A finished run with the same settings and inputs is returned as is; a killed one resumes from its
last finished epoch.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from instlib.config.count import AUTO_SIGMA, AUTO_SIGMA_FRACTION, TrainConfig
from instlib.count.backbone import check_backbone
from instlib.count.bank import ImageBank, cell_sigma, channel_stats, concat_banks
from instlib.count.inputs import RunData, fingerprint, load_run_data, scaled, stains
from instlib.count.loop import fit, write_history
from instlib.count.metrics import score, score_by
from instlib.count.model import CountModel, save_model
from instlib.count.predict import check_channels, count_bank, true_counts, whole_image_evaluation
from instlib.count.runtime import pick_device, seed_everything
from instlib.count.spec import NORMS, ModelSpec
from instlib.data.atomic import read_json, write_json
from instlib.errors import DataError
from instlib.runs.folders import (CHECKPOINT_FILE, METRICS_FILE, MODEL_FILE, PREDICTIONS_FILE, RUN_FILE, claim,
                                  write_csv)


def _mean_crop_count(bank: ImageBank, size: int) -> float:
    """Expected count of a random crop, assuming cells spread evenly over each image."""
    shapes = bank.shapes.double()
    frac = shapes.clamp(max=size).prod(1) / shapes.prod(1)
    return float((bank.counts() * frac).mean())


def _resolve_sigma(config: TrainConfig, real: ImageBank) -> TrainConfig:
    """``config`` with ``sigma="auto"`` replaced by :data:`AUTO_SIGMA_FRACTION` of the blob scale of the cells of
    the real training images."""
    if config.sigma != AUTO_SIGMA or config.head != "density":
        return config
    sigma = cell_sigma(real)
    if sigma is None:
        raise DataError("the real training images have no annotated cells to measure the width of the density "
                        "targets at; give it in pixels (--sigma)", Path(real.paths[0]).parent)
    return config.updated(sigma=round(AUTO_SIGMA_FRACTION * sigma, 2))


def build_model(data: RunData, config: TrainConfig) -> CountModel:
    """A fresh model of ``config``, normalised with the statistics of the real images of ``data``."""
    real = data.finetune if data.finetune is not None else data.train
    if config.norm == "data":
        # The model is deployed on real images, so their statistics normalise every stage.
        mean, std = channel_stats(concat_banks([real, data.val]))
    else:
        mean, std = NORMS[config.norm]
    spec = ModelSpec(backbone=config.backbone, channels=concat_banks([real, data.val]).channels, mean=mean, std=std,
                     crop_size=config.crop_size, head=config.head, count_scales=config.count_scales,
                     count_weight=config.count_weight, out_stride=config.out_stride,
                     **({"sigma": config.sigma} if config.head == "density" else {}),  # the regressor has dot targets
                     intensity_percentile=config.intensity_percentile,
                     density=config.head == "regression" and config.density,
                     drop_rate=config.drop_rate, drop_path_rate=config.drop_path_rate)
    model = CountModel(spec, pretrained=config.pretrained)
    if config.mean_count_bias:
        model.init_count(_mean_crop_count(data.train, config.crop_size))
    return model


def run(data: RunData, out: str | Path, config: TrainConfig, *, progress: bool = True,
        device: str | None = None) -> dict:
    """Train, select and test one run on decoded images (see :func:`train_run`); returns the metrics."""
    out = Path(out)
    data = scaled(data, config.intensity_percentile)
    stamp = {"config": config.dump(), "inputs": {
        "train": fingerprint(data.train), "val": fingerprint(data.val), "test": fingerprint(data.test),
        "finetune": fingerprint(data.finetune), "mix_with": fingerprint(data.mix_with),
        "folders": data.describe}}
    real = data.finetune if data.finetune is not None else data.train
    check_channels(data.test, concat_banks([real, data.val]).channels, "the real training images of this run are")
    if claim(out, RUN_FILE, stamp, "counting run") and (out / METRICS_FILE).is_file():
        return read_json(out / METRICS_FILE)
    config = _resolve_sigma(config, real)
    tic = time.perf_counter()
    dev = pick_device(device)
    gen = seed_everything(config.seed)
    model = build_model(data, config).to(dev)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)

    history, before = fit(model, data, config, out, dev, gen, progress)

    pred, pred_center = count_bank(model, data.test, batch_size=config.eval_batch_size, device=dev, amp=config.amp,
                                   channels_last=config.channels_last, progress=progress)
    true, true_center = true_counts(data.test, config.crop_size)
    predictions = pd.DataFrame({"name": data.test.names, "true": true, "pred": pred,
                                "true_center": true_center, "pred_center": pred_center})
    test_stains = stains(data.test)
    if test_stains:
        predictions["stain"] = test_stains
    selected = {h["stage"]: h["epoch"] for h in history if h.get("selected")}
    metrics = {
        **score(true, pred),
        **({"by_stain": score_by(test_stains, true, pred)} if test_stains else {}),
        "evaluation": whole_image_evaluation(model.spec),
        "center": {**score(true_center, pred_center),
                   "evaluation": f"centre {config.crop_size}x{config.crop_size} crop (the reference's protocol)"},
        "selected_epochs": selected,
        "excluded": data.excluded,  # training images drawn from a test image, left out
        "wall_s": before + time.perf_counter() - tic,  # including the time before a resume
        "produced_by": {"config": config.dump(), "inputs": data.describe, "device": str(dev),
                        "torch": torch.__version__, "python": platform.python_version(),
                        "fingerprints": stamp["inputs"]},
    }
    save_model(model, out / MODEL_FILE)
    write_csv(out / PREDICTIONS_FILE, predictions)
    write_history(out, history)
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
    check_backbone(config.backbone, config.pretrained)  # before minutes of decoding
    data = load_run_data(train_dirs, test_dir, config, finetune_dir=finetune_dir, mix_with=mix_with,
                         progress=progress)
    return run(data, out, config, progress=progress, device=device)
