"""The paper's numbers as data, the results summary, and the notebook helpers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from instlib.errors import InstlibError
from instlib.runs import results
from instlib.runs.layout import RunLayout
from instlib.runs.notebook import banner, describe, pick_names, prepare_real, real_folder, subset
from instlib.runs.profiles import get_profile


def _summary(**mae: float) -> pd.DataFrame:
    rows = [{"source": s, "mix": "none", "mae_mean": v, "mae_ci": 1.0, "rmse_mean": v + 2, "rmse_ci": 1.5,
             "acp_mean": 10.0, "acp_ci": 2.0, "runs": 15, "seeds": 3} for s, v in mae.items()]
    return pd.DataFrame(rows)


def _comparison(a: str, b: str, delta: float, low: float, high: float, p_holm: float, claimed: bool) -> dict:
    return {"a": a, "b": b, "delta_mae": delta, "ci_low": low, "ci_high": high, "p_value": p_holm / 3,
            "p_holm": p_holm, "n_images": 36, "n_seeds": 3, "share_a_better": 1.0 if delta < 0 else 0.0,
            "mde": 1.2, "claimed": claimed}


def test_paper_results_are_the_published_numbers():
    df = results.paper_results().set_index(["source", "mix"])
    assert df.loc[("InST", "none"), "value"] == 25.95 and df.loc[("InST", "none"), "exact"]
    assert df.loc[("real", "none"), "value"] == 27.74
    assert df.loc[("Cell200-s", "none"), "value"] == 53.70
    synhc = df.loc[("Syn-HC", "none")]
    assert not synhc["exact"] and math.isclose(synhc["value"], 25.95 / (1 - 0.37), abs_tol=0.01)
    assert math.isnan(df.loc[("InST", "cutmix"), "value"]) and not df.loc[("InST", "cutmix"), "exact"]


def test_labels_and_order_of_sources():
    df = results.label_sources(pd.DataFrame({"source": ["inst", "real", "synhc", "inst"],
                                             "mix": ["dacs", "none", "none", "none"]}))
    assert list(df["source"]) == ["real", "Syn-HC", "InST", "InST"] and list(df["mix"])[-2:] == ["none", "dacs"]


def test_beside_paper_marks_derived_and_missing_numbers():
    table = results.beside_paper(_summary(real=10.0, **{"Syn-HC": 12.0, "InST": 9.0}))  # ± the interval over seeds
    assert table.loc["InST", "this run: MAE"] == "9.00 ± 1.00"
    assert table.loc["InST", "paper: MAE"] == "25.95"
    assert table.loc["Syn-HC", "paper: MAE"] == "~41 (derived)"
    assert table.loc["Cell200-s", "this run: MAE"] == "not run"


def test_statement_states_only_claimed_differences():
    classical = results.SOURCE_LABELS["classical"]
    comparisons = pd.DataFrame([_comparison("InST", "Syn-HC", -3.0, -4.0, -2.0, 0.003, True),
                                _comparison("real", "InST", 0.4, -0.5, 1.3, 0.6, False),
                                _comparison("real", classical, -1.5, -2.5, -0.4, 0.02, True)])
    shows, _ = results.statement(get_profile("demo"), comparisons)
    inst_syn, inst_real, real_classical, overall = shows
    assert inst_syn.startswith("InST counted the same test images better than Syn-HC (InST minus Syn-HC: -3.00 cells")
    assert "interval -4.00 to -2.00" in inst_syn and "Holm-corrected p = 0.003" in inst_syn
    assert "37%" in inst_syn  # what the paper reports for the pair
    # not claimed: no direction is stated, and the smallest detectable difference is
    assert inst_real.startswith("No difference detected between InST and real at this size (InST minus real: -0.40")
    assert "interval -1.30 to +0.50" in inst_real and "about 1.2 cells" in inst_real and "better" not in inst_real
    assert real_classical.startswith("real counted the same test images better than classical")
    assert "2 differ beyond chance" in overall and "3 pairs" in overall


def test_statement_is_plain_about_what_a_smoke_run_cannot_show():
    smoke = get_profile("smoke", diffusion_model="tiny")
    shows, not_shows = results.statement(smoke, None, cell200=False)
    assert shows == ["This run has no counting results to compare."]
    text = " ".join(not_shows)
    assert "random weights" in text and "simulator" in text and "1 training seed(s)" in text and "Cell200-s" in text
    paper = get_profile("paper", **{"cv.seeds": [1, 2, 3]})
    _, not_shows = results.statement(paper, None, cell200=True)
    assert not_shows and "random" not in " ".join(not_shows) and "seed(s)" not in " ".join(not_shows)


def test_metrics_table_and_finite_check():
    s = _summary(real=10.0, InST=9.0)
    t = results.metrics_table(s)
    assert t.loc["real", "MAE"] == "10.00 ± 1.00" and t.loc["real", "runs"] == 15 and t.loc["real", "seeds"] == 3
    one_seed = results.metrics_table(_summary(real=10.0).assign(mae_ci=np.nan, seeds=1))
    assert one_seed.loc["real", "MAE"] == "10.00"  # one seed: no spread to show
    assert results.finite_metrics(s)
    s.loc[0, "mae_mean"] = np.nan
    assert not results.finite_metrics(s)


def test_banner_and_description_follow_the_profile():
    smoke = get_profile("smoke")
    box = banner(smoke)
    assert box is not None and "diffusion prior trained in notebook 2" in box._repr_html_()
    assert "simulator" in box._repr_html_() and "random weights" not in box._repr_html_()
    assert "random weights" in banner(get_profile("smoke", diffusion_model="tiny"))._repr_html_()
    assert 'class="admonition warning"' in box._repr_html_()
    assert banner(get_profile("paper")) is None
    assert banner(get_profile("paper", diffusion_model="sd14-random")) is not None
    line = describe(smoke)
    assert "profile **smoke**" in line and "12 images of 64 px" in line and "test_efficientnet" in line
    assert "diffusion prior trained in this run" in line and "30 steps on 32 px crops" in line


def test_real_data_from_a_folder_subset_and_pointer(tmp_path):
    from instlib.data import list_samples
    from instlib.data.simulate import simulate

    src = simulate(tmp_path / "mine", 10, (32, 32), (0, 12), seed=1, progress=False)
    run = RunLayout(tmp_path / "run")
    with pytest.raises(InstlibError, match="run notebook 01_synthesize first"):
        real_folder(get_profile("smoke"), run)
    # a user's folder is used in place when it has no more images than asked for
    p = get_profile("smoke", **{"data.real": str(src), "data.n_real": 0})
    assert prepare_real(p, run) == src.resolve() and real_folder(p, run) == src.resolve()
    # ... and subset evenly over the counts otherwise
    p4 = get_profile("smoke", **{"data.real": str(src), "data.n_real": 4})
    sub = prepare_real(p4, run)
    counts = sorted(s.count() for s in list_samples(src))
    picked = sorted(s.count() for s in list_samples(sub))
    assert sub == run.real.resolve() and len(picked) == 4 and picked[0] == counts[0] and picked[-1] == counts[-1]
    with pytest.raises(InstlibError, match="data.real='simulate'"):
        real_folder(get_profile("smoke"), run)
    assert len(pick_names(src, 3)) == 3 and len(pick_names(src, 30)) == 10
    assert subset(src, tmp_path / "two", 2).is_dir()


def _cv_dir(tmp_path, recipe="authors", split="stratified", keep=None, **config):
    rows = [{"source": src, "mix": "none", "fold": k, "seed": 42, "mae": 1.0, "n_test": 4, "epochs": 5,
             "finetune_epochs": 0 if src == "real" else 5, "excluded": 0 if src == "real" else 3 + k,
             "pretrain_epoch": None if src == "real" else 2 + k, "final_epoch": 4}
            for src in ("real", "synhc") for k in range(2)]
    pd.DataFrame(rows).to_csv(tmp_path / "results.csv", index=False)
    (tmp_path / "cv.json").write_text(json.dumps({"folds": 2, "config": {"recipe": recipe, "split": split,
                                                                          "density": False, "keep": keep, **config}}))
    return tmp_path


def test_protocol_tables_give_exclusions_per_fold_and_kept_epochs_per_run(tmp_path):
    cv_dir = _cv_dir(tmp_path)
    table = results.protocol_table(cv_dir)
    syn = table[table["source"] == "Syn-HC"].set_index("fold")
    assert syn["excluded"].to_dict() == {0: 3, 1: 4} and syn["pretrain_epoch"].to_dict() == {0: 2, 1: 3}
    assert table.loc[table["source"] == "real", "pretrain_epoch"].isna().all()
    assert str(table["pretrain_epoch"].dtype) == "Int64"  # whole epochs, empty for real-only runs
    # cv.json of a run from before the choice existed: the lowest validation MAE, as then.
    assert results.protocol(cv_dir) == {"recipe": "authors", "split": "stratified", "folds": 2, "head": "regression",
                                        "density": False, "excluded": 7, "keep": "best", "sigma": None, "sigmas": []}
    text = " ".join(results.protocol_statement(cv_dir))
    assert "'authors'" in text and "2-fold cross-validation" in text and "7 synthetic images" in text
    assert "fold 0: 3, fold 1: 4" in text and "kept epoch 2 to 3 of 5: each stage keeps the trained epoch of lowest" in text
    (tmp_path / "last").mkdir()
    last = " ".join(results.protocol_statement(_cv_dir(tmp_path / "last", recipe="instlib", keep="last")))
    assert "keeps its last epoch" in last and "lowest" not in last

    (tmp_path / "density").mkdir()
    density = _cv_dir(tmp_path / "density", recipe="instlib", keep="last", head="density", sigma="auto")
    rows = pd.read_csv(density / "results.csv")
    rows.assign(sigma=[5.96, 6.1] * 2).to_csv(density / "results.csv", index=False)  # measured per run
    text = " ".join(results.protocol_statement(density))
    assert ("density-map head (U-Net decoder, Gaussian targets of σ 5.96-6.1 px, half the cells' blob scale measured on "
            "each run's real training images)") in text

    (tmp_path / "official").mkdir()
    official = " ".join(results.protocol_statement(_cv_dir(tmp_path / "official", split="official")))
    assert "official split" in official


def test_protocol_by_fold_joins_the_seeds_that_did_the_same(tmp_path):
    cv_dir = _cv_dir(tmp_path)
    rows = pd.read_csv(cv_dir / "results.csv")
    other = rows.assign(seed=43)
    other.loc[(other["source"] == "synhc") & (other["fold"] == 1), "pretrain_epoch"] = 5  # kept another epoch
    classical = rows.iloc[:1].assign(source="classical", excluded=0)
    pd.concat([rows, other, classical]).to_csv(cv_dir / "results.csv", index=False)
    table = results.protocol_by_fold(cv_dir)
    assert table.loc[("real", "none", 0), "seeds"] == "42, 43"
    split = table.loc[("Syn-HC", "none", 1)]
    assert split["seeds"].tolist() == ["42", "43"] and split["pretrain_epoch"].tolist() == [3, 5]
    assert len(table) == 5 and "classical (no training)" not in table.index.get_level_values("source")


def test_statement_says_when_the_recipe_is_not_the_authors(tmp_path):
    paper = get_profile("paper", **{"cv.seeds": [1, 2, 3]})
    _, not_shows = results.statement(paper, None, cell200=True, cv_dir=_cv_dir(tmp_path, recipe="instlib"))
    assert any("'instlib' recipe" in s for s in not_shows)
    _, not_shows = results.statement(paper, None, cell200=True, cv_dir=_cv_dir(tmp_path, recipe="authors"))
    assert not any("recipe" in s for s in not_shows)


def test_metrics_table_shows_exclusions():
    summary = _summary(InST=20.0).assign(excluded_mean=3.5)
    assert results.metrics_table(summary).loc["InST", "excluded / run"] == "3.5"


def test_exposure_says_what_each_source_saw():
    demo = get_profile("demo", diffusion_model="prior")
    real, synhc, inst = results.exposure(demo)
    assert real.startswith("Real") and "never its test images" in real
    assert synhc.startswith("Syn-HC") and "every real image;" in synhc and "left out of that fold" in synhc
    assert "test images included (their pixels and count category, never their points)" in inst
    assert "diffusion prior trained in this run on the pixels of every real image, test images included" in inst
    # the official split, with Syn-HC drawn from the DAPI images only (the paper profile's defaults are the
    # authors' 5-fold CV and Syn-HC from every stain)
    paper = results.exposure(get_profile("paper", **{"count.split": "official", "data.synhc_from": "selection"}))
    assert "every real image of stain DAPI" in paper[1]
    assert "the official split's training and validation images of stain DAPI" in paper[2] and "test images" not in paper[2]
    assert "as published (it never saw this run's images)" in paper[2]
    named = results.exposure(get_profile("smoke", diffusion_model="tiny", **{"data.names": "*_DAPI_*"}))
    assert "named '*_DAPI_*'" in named[1] and "random weights" in named[2]


def test_stain_table_pools_folds_per_seed_and_shows_empty_fields(tmp_path):
    (tmp_path / "runs").mkdir()
    (tmp_path / "cv.json").write_text(json.dumps({"folds": 2}))
    truth = {"d0": ("DAPI", 40.0), "d1": ("DAPI", 60.0), "c0": ("Cy3", 0.0), "c1": ("Cy3", 1.0)}
    for seed, offset in ((42, 2.0), (43, 4.0)):
        for fold, names in enumerate((["d0", "c0"], ["d1", "c1"])):
            run = tmp_path / "runs" / f"real-none-fold{fold}-seed{seed}"
            run.mkdir()
            pd.DataFrame({"name": names, "stain": [truth[n][0] for n in names], "true": [truth[n][1] for n in names],
                          "pred": [truth[n][1] + offset for n in names]}).to_csv(run / "predictions.csv", index=False)
            (run / "result.json").write_text(json.dumps({"source": "real", "mix": "none", "fold": fold, "seed": seed}))
    table = results.stain_table(tmp_path)
    dapi, cy3 = table.loc[("real", "DAPI")], table.loc[("real", "Cy3")]
    # seeds 2 and 4 cells off on every image: mean 3, t-interval 12.71 * std(2, 4) / sqrt(2) = 12.71
    assert dapi["MAE"] == "3.00 ± 12.71" and dapi["test images"] == 2
    assert cy3["mean count on images of 0-1 cells"] == f"{np.mean([2.0, 3.0, 4.0, 5.0]):.1f}"
    assert dapi["mean count on images of 0-1 cells"] == "-"
