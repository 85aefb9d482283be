"""The classical baseline: Gaussian smoothing + local maxima, fitted on training images only."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from instlib import cli
from instlib.count import classical, cv
from instlib.count.classical import PeakGrid, PeakParams, fit, fit_and_count
from instlib.count.cv import FOLD_SEED
from instlib.config import GridConfig, TrainConfig
from instlib.count.bank import load_bank
from instlib.data.folder import list_samples
from instlib.data.splits import stratified_kfold
from instlib.errors import InstlibError

from .conftest import disc_image, write_folder


def _discs(root, n: int, seed: int, radius: float = 3.0, shape=(80, 90)):
    """Clean images: separated bright discs, 0-25 per image."""
    rng = np.random.default_rng(seed)
    images, points = [], []
    for _ in range(n):
        pts = []
        while len(pts) < rng.integers(0, 26):
            p = rng.uniform([6, 6], [shape[1] - 6, shape[0] - 6])
            if all(np.hypot(*(p - q)) > 4 * radius for q in pts):
                pts.append(p)
        pts = np.array(pts).reshape(-1, 2)
        images.append(disc_image(pts, shape, radius))
        points.append(pts)
    return write_folder(root, images, points)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    root = tmp_path_factory.mktemp("classical")
    return {"train": _discs(root / "train", 8, 0), "test": _discs(root / "test", 6, 1)}


def test_recovers_counts_on_clean_images(clean):
    train, test = (load_bank(list_samples(clean[k])) for k in ("train", "test"))
    predictions, m = fit_and_count(train, test, crop_size=40)
    assert m["train_mae"] <= 0.25 and m["mae"] <= 0.5
    assert np.allclose(predictions["pred"], predictions["true"], atol=1)
    assert list(predictions.columns) == ["name", "true", "pred", "true_center", "pred_center"]


def test_parameters_come_from_the_training_images_only(clean):
    train, test = (load_bank(list_samples(clean[k])) for k in ("train", "test"))
    params, _ = fit(train)
    _, m = fit_and_count(train, test)
    assert m["params"] == params.__dict__
    # Wrong test labels change the score, never the parameters.
    shuffled = test.subset(range(len(test)))
    shuffled.points = shuffled.points[:5]
    shuffled.offsets = shuffled.offsets.clamp(max=5)
    _, m2 = fit_and_count(train, shuffled)
    assert m2["params"] == m["params"] and m2["mae"] != m["mae"]



def test_the_search_returns_the_setting_with_the_lowest_training_mae(clean):
    train = load_bank(list_samples(clean["train"]))
    grid = PeakGrid(sigmas=(1.0, 6.0), min_distances=(2, 12), thresholds=(0.1, 0.7))
    params, mae = fit(train, grid)
    true = train.counts().numpy()
    brute = {PeakParams(s, d, t): float(np.abs(classical.count(train, PeakParams(s, d, t))[0] - true).mean())
             for s in grid.sigmas for d in grid.min_distances for t in grid.thresholds}
    assert mae == min(brute.values()) == brute[params]
    assert max(brute.values()) > mae + 1  # the settings differ, so the choice matters


def test_the_classical_source_of_cross_validation_uses_its_folds(clean, monkeypatch, tmp_path):
    seen = []
    original = cv.fit_and_count

    def spy(train, test, **kw):
        seen.append((sorted(train.names), sorted(test.names)))
        return original(train, test, **kw)

    monkeypatch.setattr(cv, "fit_and_count", spy)
    config = TrainConfig(model="test_efficientnet", pretrained=False, crop_size=48)
    df = cv.cross_validate(clean["train"], tmp_path / "cv", config, GridConfig(folds=2), sources={"classical": []},
                           progress=False)
    assert list(df.columns) == list(cv.COLUMNS)
    assert (df["source"] == "classical").all() and (df["mix"] == "none").all() and list(df["fold"]) == [0, 1]
    bank = load_bank(list_samples(clean["train"]))
    for (tr, te), (tr_idx, te_idx) in zip(seen, stratified_kfold(bank.counts().numpy(), n_folds=2, seed=FOLD_SEED)):
        assert tr == sorted(bank.names[i] for i in tr_idx) and te == sorted(bank.names[i] for i in te_idx)
    assert df["n_test"].tolist() == [len(te) for _, te in seen]
    # Its predictions sit where the deep runs' do, for the scatter plots and tables.
    preds = pd.read_csv(tmp_path / "cv" / "runs" / "classical-none-fold0-seed42" / "predictions.csv")
    assert sorted(preds["name"]) == seen[0][1]
    # A mixing variant or folders make no sense for a baseline.
    with pytest.raises(InstlibError, match="no pre-training folders"):
        cv.cross_validate(clean["train"], tmp_path / "cv2", config, sources={"classical": [clean["test"]]},
                          progress=False)


def test_cli(clean, tmp_path):
    out = tmp_path / "c.csv"
    result = CliRunner().invoke(cli.app, ["count", "classical", "--train", str(clean["train"]), "--test",
                                          str(clean["test"]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "MAE" in result.output and out.is_file()
