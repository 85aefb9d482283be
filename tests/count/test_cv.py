"""Cross-validation: stratified disjoint folds, the grid, resume after a kill, shards, tables."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from instlib.count import cross_validate, cv
from instlib.config import GridConfig
from instlib.count.bank import load_bank
from instlib.data.folder import list_samples
from instlib.data.splits import count_strata, stratified_kfold
from instlib.errors import DataError, InstlibError
from instlib.data.shard import take_shard

from .conftest import tiny_config


def test_folds_are_stratified_and_disjoint():
    counts = np.random.default_rng(0).integers(7, 301, size=41)  # like IDCIA: 41 images, 7-300 cells
    folds = stratified_kfold(counts, n_folds=5, seed=42)
    tests = [set(te.tolist()) for _, te in folds]
    assert sum(len(t) for t in tests) == 41 and set().union(*tests) == set(range(41))
    for (tr, te) in folds:
        assert not set(tr.tolist()) & set(te.tolist()) and len(tr) + len(te) == 41
    # Every count stratum is spread over the folds: no fold holds two more of a stratum than another.
    strata = count_strata(counts, 5)
    per_fold = np.array([[np.sum(strata[te] == s) for s in np.unique(strata)] for _, te in folds])
    assert (per_fold.max(0) - per_fold.min(0) <= 1).all()
    # Low and high counts reach every fold.
    assert all(counts[te].min() < np.median(counts) < counts[te].max() for _, te in folds)


def test_fold_data_keeps_test_validation_and_training_apart(folders):
    real = load_bank(list_samples(folders["real"]))
    splits = stratified_kfold(real.counts().numpy(), n_folds=4, seed=42)
    syn = load_bank(list_samples(folders["syn"]))
    tested = []
    for train_idx, test_idx in splits:
        fit_idx, val_idx = cv._fit_val(real, folders["real"], train_idx, tiny_config())
        for source, mix in ((None, "none"), (syn, "cutmix"), (syn, "dacs")):
            d = cv.fold_data(real, (fit_idx, val_idx, test_idx), source, mix)
            fit = d.train if source is None else d.finetune
            names = [set(b.names) for b in (fit, d.val, d.test)]
            assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
            assert set().union(*names) == set(real.names)
            if mix == "dacs":
                assert not d.mix_with.labelled and set(d.mix_with.names) == names[0]
            if mix == "cutmix":
                assert d.mix_with.labelled and set(d.mix_with.names) == names[0]
        tested += d.test.names
    assert sorted(tested) == sorted(real.names)


def test_grid_and_shards():
    jobs = cv.jobs_of(["real", "syn", "inst"], ["none", "cutmix", "dacs"], folds=5, seeds=[1, 2])
    assert len(jobs) == (1 + 2 * 3) * 5 * 2
    assert not [j for j in jobs if j.source == "real" and j.mix != "none"]
    shards = [take_shard(jobs, (i, 3)) for i in range(3)]
    assert sorted(j.name for s in shards for j in s) == sorted(j.name for j in jobs)
    assert len({j.name for j in jobs}) == len(jobs)


def test_grid_resumes_after_a_kill_and_shards(folders, tmp_path, monkeypatch):
    out = tmp_path / "cv"
    config = tiny_config(epochs=1, finetune_epochs=1)
    grid = GridConfig(mixes=("none", "cutmix", "dacs"), folds=2)
    kw = dict(sources={"real": [], "syn": [folders["syn"]]}, progress=False)
    real_run, ran = cv.run, []

    def counting_run(data, run_dir, cfg, **k):
        if len(ran) == 2 and kill[0]:
            raise KeyboardInterrupt
        ran.append(run_dir.name)
        return real_run(data, run_dir, cfg, **k)

    kill = [True]
    monkeypatch.setattr(cv, "run", counting_run)
    with pytest.raises(KeyboardInterrupt):
        cross_validate(folders["real"], out, config, grid, shard=(0, 2), **kw)
    first = list(ran)
    assert len(pd.read_csv(out / "results.csv")) == 2

    kill[0] = False
    cross_validate(folders["real"], out, config, grid, shard=(0, 2), **kw)
    shard0 = [j.name for j in take_shard(cv.jobs_of(["real", "syn"], grid.mixes, 2, [42]), (0, 2))]
    assert ran == first + [n for n in shard0 if n not in first]  # finished runs were skipped
    cross_validate(folders["real"], out, config, grid, shard=(1, 2), **kw)
    n_before = len(ran)
    results = cross_validate(folders["real"], out, config, grid, **kw)
    assert len(ran) == n_before  # everything was done: nothing runs again

    assert len(results) == 2 + 2 * 3
    assert list(results.columns[:10]) == ["source", "mix", "fold", "seed", "mae", "rmse", "acp", "mae_center",
                                          "rmse_center", "acp_center"]
    assert {"epochs", "finetune_epochs", "wall_s", "n_test"} <= set(results.columns)
    for row in results.itertuples():  # the width of the density targets each run measured and trained with
        metrics = json.loads((out / "runs" / f"{row.source}-{row.mix}-fold{row.fold}-seed{row.seed}" /
                              "metrics.json").read_text())
        assert row.sigma == metrics["produced_by"]["config"]["sigma"] > 0
    assert results[["mae", "rmse", "acp"]].notna().all().all()
    assert (results.groupby(["source", "mix"])["n_test"].sum() == 20).all()  # each image tested once
    pd.testing.assert_frame_equal(pd.read_csv(out / "results.csv"), results, check_dtype=False)

    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4 and (summary["runs"] == 2).all()
    row = summary[(summary["source"] == "syn") & (summary["mix"] == "dacs")].iloc[0]
    sub = results[(results["source"] == "syn") & (results["mix"] == "dacs")]
    # one seed: the MAE over the test images of both folds together, and no spread over seeds
    assert row["mae_mean"] == pytest.approx(np.average(sub["mae"], weights=sub["n_test"]))
    assert row["seeds"] == 1 and np.isnan(row["mae_std"]) and np.isnan(row["mae_ci"])

    with pytest.raises(DataError, match=r"holds another cross-validation \(settings differ in \['epochs'\]\)"):
        cross_validate(folders["real"], out, tiny_config(epochs=3), grid, **kw)


def test_summary_pools_folds_per_seed_and_spreads_over_seeds():
    rows = [{"source": "a", "mix": "none", "fold": fold, "seed": seed, "mae": mae, "rmse": rmse, "acp": acp,
             "mae_center": 0.0, "rmse_center": 0.0, "acp_center": 0.0, "n_test": n, "excluded": 0}
            for seed, folds in {1: [(1.0, 2.0, 50.0, 10), (4.0, 4.0, 0.0, 30)],
                                2: [(2.0, 2.0, 100.0, 10), (2.0, 2.0, 100.0, 30)]}.items()
            for fold, (mae, rmse, acp, n) in enumerate(folds)]
    row = cv.summarize(pd.DataFrame(rows)).iloc[0]
    # seed 1 over its 40 test images: MAE (10 * 1 + 30 * 4) / 40 = 3.25, RMSE sqrt((10 * 4 + 30 * 16) / 40),
    # ACP 12.5 %; seed 2: 2, 2, 100 %
    assert row["mae_mean"] == pytest.approx((3.25 + 2.0) / 2)
    assert row["rmse_mean"] == pytest.approx((np.sqrt(13.0) + 2.0) / 2)
    assert row["acp_mean"] == pytest.approx((12.5 + 100.0) / 2)
    assert row["mae_std"] == pytest.approx(np.std([3.25, 2.0], ddof=1))
    assert row["mae_ci"] == pytest.approx(12.706 * row["mae_std"] / np.sqrt(2), rel=1e-3)  # t(0.975, 1 df)
    assert (row["runs"], row["seeds"]) == (4, 2)


def test_bad_grids(folders, tmp_path):
    with pytest.raises(InstlibError, match="needs at least one folder"):
        cross_validate(folders["real"], tmp_path / "a", tiny_config(), sources={"syn": []}, progress=False)
    with pytest.raises(InstlibError, match="may not contain"):
        cross_validate(folders["real"], tmp_path / "b", tiny_config(), sources={"a-b": [folders["syn"]]},
                       progress=False)
    with pytest.raises(DataError, match="cannot be split into 50 folds"):
        cross_validate(folders["real"], tmp_path / "c", tiny_config(), GridConfig(folds=50), progress=False)
