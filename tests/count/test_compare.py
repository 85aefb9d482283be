"""Paired comparisons of cross-validation rows: intervals cover known differences, pairing is by image."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from instlib.count.compare import COLUMNS, compare, compare_pair, compare_runs, holm, image_errors, write_comparisons
from instlib.errors import DataError

from data.cli_runner import run_cli

N_IMAGES, SEEDS = 40, (42, 43, 44)


def _errors(values: np.ndarray, names: list[str]) -> pd.Series:
    """Absolute errors indexed by (image, seed), ``values`` of shape (images, seeds)."""
    index = pd.MultiIndex.from_product([names, SEEDS], names=["name", "seed"])
    return pd.Series(values.ravel(), index=index)


def _fake_cv(root: Path, rows: dict[tuple[str, str], np.ndarray], truth: np.ndarray) -> Path:
    """A cross-validation folder whose runs predicted ``truth + rows[(source, mix)][image, seed]``."""
    names = [f"{i:02d}" for i in range(len(truth))]
    (root / "runs").mkdir(parents=True)
    (root / "cv.json").write_text(json.dumps({"folds": 2}))
    results = []
    for (source, mix), offsets in rows.items():
        for s, seed in enumerate(SEEDS):
            for fold in (0, 1):
                part = slice(fold, None, 2)
                run = root / "runs" / f"{source}-{mix}-fold{fold}-seed{seed}"
                run.mkdir()
                pd.DataFrame({"name": names[part], "true": truth[part], "pred": truth[part] + offsets[part, s]}
                             ).to_csv(run / "predictions.csv", index=False)
                row = {"source": source, "mix": mix, "fold": fold, "seed": seed}
                (run / "result.json").write_text(json.dumps(row))
                results.append(row)
    pd.DataFrame(results).to_csv(root / "results.csv", index=False)
    return root


def test_a_known_difference_is_covered_and_significant():
    rng = np.random.default_rng(0)
    names = [f"img{i}" for i in range(N_IMAGES)]
    b = rng.gamma(2.0, 3.0, size=(N_IMAGES, len(SEEDS)))
    a = np.clip(b - 2.0 + rng.normal(0, 0.3, size=b.shape), 0, None)
    r = compare_pair(_errors(a, names), _errors(b, names))
    true_delta = (a.mean(axis=1) - b.mean(axis=1)).mean()
    assert r["ci_low"] <= true_delta <= r["ci_high"] < 0
    assert r["p_value"] < 0.001 and r["share_a_better"] == 1.0
    assert (r["n_images"], r["n_seeds"]) == (N_IMAGES, 3) and 0 < r["mde"] < 2.0


def test_identical_rows_cover_zero():
    rng = np.random.default_rng(1)
    names = [f"img{i}" for i in range(N_IMAGES)]
    e = rng.gamma(2.0, 3.0, size=(N_IMAGES, len(SEEDS)))
    r = compare_pair(_errors(e, names), _errors(e, names))
    assert r["ci_low"] <= 0 <= r["ci_high"] and r["delta_mae"] == 0 and r["p_value"] == 1.0
    # Two noisy rows of the same counter: the interval covers 0 and nothing is claimed.
    other = np.abs(e + rng.normal(0, 1.0, size=e.shape))
    r = compare_pair(_errors(e, names), _errors(other, names))
    assert r["ci_low"] <= 0 <= r["ci_high"]


def test_pairing_is_by_test_image_not_by_order():
    rng = np.random.default_rng(2)
    names = [f"img{i}" for i in range(N_IMAGES)]
    a, b = rng.gamma(2.0, 3.0, size=(2, N_IMAGES, len(SEEDS)))
    shuffled = _errors(b, names).sample(frac=1.0, random_state=3)  # the same errors, another row order
    # (the same up to the rounding of sums taken in another order)
    assert compare_pair(_errors(a, names), shuffled) == pytest.approx(compare_pair(_errors(a, names), _errors(b, names)))
    # Pairing by position instead would change the answer: the test above can fail.
    misaligned = pd.Series(shuffled.to_numpy(), index=_errors(b, names).index)
    assert compare_pair(_errors(a, names), misaligned)["ci_low"] != compare_pair(_errors(a, names),
                                                                                 _errors(b, names))["ci_low"]


def test_holm_on_known_p_values():
    # Sorted 0.01, 0.03, 0.04, 0.2 times 4, 3, 2, 1, made monotone: 0.04, 0.09, 0.09, 0.2.
    np.testing.assert_allclose(holm(np.array([0.01, 0.04, 0.03, 0.2])), [0.04, 0.09, 0.09, 0.2])
    np.testing.assert_allclose(holm(np.array([0.5, 0.9])), [1.0, 1.0])


def test_a_cross_validation_folder_gives_every_pair(tmp_path):
    rng = np.random.default_rng(4)
    truth = rng.integers(5, 80, size=N_IMAGES).astype(float)
    noise = lambda scale: rng.normal(0, scale, size=(N_IMAGES, len(SEEDS)))  # noqa: E731
    cv = _fake_cv(tmp_path / "cv", {("real", "none"): noise(4.0), ("inst", "none"): noise(1.0),
                                    ("inst", "cutmix"): noise(1.0), ("classical", "none"): noise(6.0)}, truth)
    table = write_comparisons(cv)
    assert list(table.columns) == list(COLUMNS) and len(table) == 6  # every pair of four rows
    assert pd.read_csv(cv / "comparisons.csv", dtype={"a": str, "b": str})[["a", "b"]].equals(table[["a", "b"]])
    row = table[(table["a"] == "real") & (table["b"] == "InST")].iloc[0]
    assert row["delta_mae"] > 0 and row["claimed"] and row["n_images"] == N_IMAGES and row["n_seeds"] == 3
    same = table[(table["a"] == "InST") & (table["b"] == "InST + cutmix")].iloc[0]
    assert not same["claimed"] and same["ci_low"] <= 0 <= same["ci_high"]
    against = compare(cv, baseline="classical (no training)")
    assert len(against) == 3 and set(against["b"]) == {"classical (no training)"}
    assert image_errors(pd.DataFrame({"source": ["x"], "mix": ["none"], "seed": [1], "name": ["01"], "true": [3.0],
                                      "pred": [1.0]})).loc[("01", 1), "x"] == 2.0


def test_count_compare_refuses_a_folder_that_is_not_a_cross_validation(capsys, tmp_path):
    (tmp_path / "run").mkdir()
    code, _, err = run_cli(capsys, "count", "compare", tmp_path / "run")
    assert code == 2 and err.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'run'}: is not a cross-validation")
    with pytest.raises(DataError, match="no row 'nope'"):
        rng = np.random.default_rng(5)
        truth = rng.integers(5, 80, size=10).astype(float)
        compare(_fake_cv(tmp_path / "cv", {("real", "none"): rng.normal(size=(10, 3))}, truth), baseline="nope")


def test_single_runs_are_compared_by_test_image(capsys, tmp_path):
    """A ``count train`` folder against a ``count classical --out`` CSV: paired by name, in any row order."""
    rng = np.random.default_rng(6)
    names = [f"{i:03d}" for i in range(N_IMAGES)]  # names that look like numbers stay names
    truth = rng.integers(5, 80, size=N_IMAGES).astype(float)
    good = pd.DataFrame({"name": names, "true": truth, "pred": truth + rng.normal(0, 1.0, N_IMAGES)})
    bad = pd.DataFrame({"name": names, "true": truth, "pred": truth + 8 + rng.normal(0, 1.0, N_IMAGES)})
    (tmp_path / "trained").mkdir()
    good.to_csv(tmp_path / "trained" / "predictions.csv", index=False)
    bad.sample(frac=1.0, random_state=0).to_csv(tmp_path / "classical.csv", index=False)
    table = compare_runs([tmp_path / "trained", tmp_path / "classical.csv"])
    row = table.iloc[0]
    expected = (good["pred"] - good["true"]).abs().mean() - (bad["pred"] - bad["true"]).abs().mean()
    assert (row["a"], row["b"]) == ("trained", "classical") and row["claimed"]
    assert row["delta_mae"] == pytest.approx(expected) and row["ci_low"] <= expected <= row["ci_high"] < 0
    code, out, err = run_cli(capsys, "count", "compare", tmp_path / "trained", tmp_path / "classical.csv")
    assert code == 0 and out.startswith("trained - classical: ") and "claimed" in out, err
    code, _, err = run_cli(capsys, "count", "compare", tmp_path / "trained", tmp_path / "missing.csv")
    assert code == 2 and f"error: {tmp_path / 'missing.csv'}: is neither a run folder" in err
    other = pd.DataFrame({"name": ["x", "y"], "true": [1.0, 2.0], "pred": [1.0, 2.0]})
    other.to_csv(tmp_path / "other.csv", index=False)
    with pytest.raises(DataError, match="shares no test image"):
        compare_runs([tmp_path / "trained", tmp_path / "other.csv"])
