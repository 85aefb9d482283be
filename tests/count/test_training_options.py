"""Training options for hard real data: intensity augmentation, crops on cells, multi-scale count loss,
cosine schedule, and evaluation per stain."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from instlib.count.augment import Intensity, intensity_augment
from instlib.count.bank import ImageBank, load_bank
from instlib.count.batches import box_counts, make_batch, sample_boxes
from instlib.count.metrics import score_by
from instlib.count.model import CountModel
from instlib.count.schedules import SCHEDULES
from instlib.count.spec import ModelSpec
from instlib.count.train import train_run
from instlib.data.folder import list_samples
from instlib.data.simulate import simulate

from .conftest import tiny_config


def _sparse_bank() -> ImageBank:
    """Two 200 x 200 images with one small clump of cells each, in a corner."""
    images = [torch.zeros(1, 200, 200, dtype=torch.uint8) for _ in range(2)]
    pts = [np.array([[20.0, 20.0], [24.0, 22.0], [22.0, 26.0]]), np.array([[180.0, 170.0], [176.0, 174.0]])]
    offsets = torch.tensor([0, 3, 5])
    return ImageBank(["a", "b"], [None, None], images, torch.from_numpy(np.concatenate(pts)), offsets)


def test_crops_on_cells_see_the_clumps():
    bank, gen = _sparse_bank(), torch.Generator().manual_seed(0)
    idx = torch.tensor([0, 1] * 200)
    plain = box_counts(bank, idx, *sample_boxes(bank, idx, 32, gen), 32)
    on_cells = box_counts(bank, idx, *sample_boxes(bank, idx, 32, gen, point_crops=1.0), 32)
    assert (on_cells > 0).float().mean() > 0.95 and (plain > 0).float().mean() < 0.1
    half = box_counts(bank, idx, *sample_boxes(bank, idx, 32, gen, point_crops=0.5), 32)
    assert 0.35 < (half > 0).float().mean() < 0.65


def test_intensity_augmentation_changes_images_not_labels(folders):
    bank = load_bank(list_samples(folders["real"]))
    idx = torch.arange(8)
    plain = make_batch(bank, idx, 48, torch.Generator().manual_seed(1), jitter=None, sigma=3.0)
    aug = make_batch(bank, idx, 48, torch.Generator().manual_seed(1), jitter=None, sigma=3.0, intensity=Intensity())
    torch.testing.assert_close(aug.maps, plain.maps)  # same crops and labels
    ratio = aug.images.mean(dim=(1, 2, 3)) / plain.images.mean(dim=(1, 2, 3)).clamp_min(1e-3)
    assert ratio.max() / ratio.min() > 1.5  # several-fold brightness between crops
    assert 0 <= aug.images.min() and aug.images.max() <= 1
    again = intensity_augment(plain.images.clone(), Intensity(), torch.Generator().manual_seed(5))
    torch.testing.assert_close(again, intensity_augment(plain.images.clone(), Intensity(),
                                                        torch.Generator().manual_seed(5)))


def test_the_count_term_at_finer_scales_charges_errors_that_cancel_in_a_crop():
    spec = ModelSpec(backbone="unet16", head="density", crop_size=32, count_weight=1.0)
    plain = CountModel(spec).net
    fine = CountModel(ModelSpec(**{**spec.__dict__, "count_scales": (1, 2)})).net
    target = torch.zeros(1, 1, 32, 32)
    target[0, 0, 4, 4] = 1.0  # one cell top left
    swapped = torch.zeros(1, 1, 16, 16)
    swapped[0, 0, 12, 12] = 1.0  # the cell predicted bottom right: the crop count is right
    pixel_only = plain.loss(None, swapped, target)
    # The crop's count is right, so the plain count term adds nothing; on 2 x 2 parts it is off by 2.
    assert fine.loss(None, swapped, target) == pytest.approx(pixel_only.item() + 1.0 * (0 + 2) / 2)


def test_cosine_schedule_runs_from_one_to_zero():
    cosine = SCHEDULES["cosine"]
    assert cosine(0, 10) == 1.0 and cosine(10, 10) == pytest.approx(0.0, abs=1e-12)
    assert cosine(5, 10) == pytest.approx(0.5) and math.isclose(cosine(2, 10), 1 - cosine(8, 10))


def test_scores_by_stain_and_the_counts_on_empty_fields():
    by = score_by(["DAPI", "Cy3", "Cy3", "DAPI", "Cy3"], [40, 0, 1, 50, 12], [38, 30, 25, 55, 10])
    assert by["DAPI"]["n"] == 2 and by["DAPI"]["mae"] == pytest.approx(3.5) and "few_mean_pred" not in by["DAPI"]
    assert by["Cy3"]["n"] == 3 and by["Cy3"]["few_mean_pred"] == pytest.approx(27.5)


def test_metrics_and_tables_per_stain(tmp_path):
    real = simulate(tmp_path / "real", n=12, size=(64, 64), cells=(2, 20), seed=0, stains=("DAPI", "Cy3"),
                    progress=False)
    test = simulate(tmp_path / "test", n=6, size=(64, 64), cells=(2, 20), seed=1, stains=("DAPI", "Cy3"),
                    progress=False)
    metrics = train_run([real], test, tmp_path / "run", tiny_config(epochs=1, crops_per_epoch=8, crop_size=32),
                        progress=False)
    assert set(metrics["by_stain"]) == {"DAPI", "Cy3"} and sum(v["n"] for v in metrics["by_stain"].values()) == 6
    preds = pd.read_csv(tmp_path / "run" / "predictions.csv")
    assert list(preds["stain"]) == ["DAPI", "Cy3"] * 3
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())["by_stain"]
    assert saved["Cy3"]["mae"] == pytest.approx(np.abs(preds["pred"] - preds["true"])[preds["stain"] == "Cy3"].mean())
