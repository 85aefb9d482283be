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
    rows = [{"source": s, "mix": "none", "mae_mean": v, "mae_std": 1.0, "rmse_mean": v + 2, "rmse_std": 1.5,
             "acp_mean": 10.0, "acp_std": 2.0, "runs": 5} for s, v in mae.items()]
    return pd.DataFrame(rows)


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
    table = results.beside_paper(_summary(real=10.0, **{"Syn-HC": 12.0, "InST": 9.0}))
    assert table.loc["InST", "this run: MAE"] == "9.00 ± 1.00"
    assert table.loc["InST", "paper: MAE"] == "25.95"
    assert table.loc["Syn-HC", "paper: MAE"] == "~41 (derived)"
    assert table.loc["Cell200-s", "this run: MAE"] == "not run"


def test_statement_is_plain_about_what_a_smoke_run_cannot_show():
    smoke = get_profile("smoke", diffusion_model="tiny")
    shows, not_shows = results.statement(_summary(real=10.0, **{"Syn-HC": 12.0, "InST": 11.5}), smoke,
                                         cell200=False)
    assert "about the same" not in shows[0] and "4% lower" in shows[0] and "does not separate" in shows[0]
    text = " ".join(not_shows)
    assert "random weights" in text and "simulator" in text and "One seed" in text and "Cell200-s" in text
    shows, _ = results.statement(_summary(**{"Syn-HC": 40.0, "InST": 20.0}), smoke)
    assert "50% lower" in shows[0] and "does not separate" not in shows[0]
    paper = get_profile("paper", **{"cv.seeds": [1, 2, 3]})
    _, not_shows = results.statement(_summary(**{"Syn-HC": 40.0, "InST": 26.0}), paper, cell200=True)
    assert not_shows and "random" not in " ".join(not_shows)


def test_statement_weighs_the_best_deep_model_against_the_classical_counter():
    smoke = get_profile("smoke")
    classical = results.SOURCE_LABELS["classical"]
    shows, _ = results.statement(_summary(real=10.0, InST=6.0, **{classical: 9.0}), smoke)
    line = next(s for s in shows if "classical counter" in s)
    assert "best deep model (InST) beat it with 6.00" in line and "within the spread" not in line
    shows, _ = results.statement(_summary(real=10.0, **{classical: 9.5}), smoke)
    line = next(s for s in shows if "classical counter" in s)
    assert "(real) did not beat it" in line and "within the spread" in line


def test_statement_compares_sources_on_the_same_test_images(tmp_path):
    # Fold 2 is hard for every counter: the rows' spreads overlap, yet real wins on every fold.
    mae = {"real": (2.0, 4.0, 6.0), "classical": (3.0, 5.5, 6.5), "synhc": (5.0, 7.0, 8.0), "inst": (4.0, 7.5, 7.0)}
    pd.DataFrame([{"source": src, "mix": "none", "fold": k, "seed": 42, "mae": v}
                  for src, folds in mae.items() for k, v in enumerate(folds)]).to_csv(tmp_path / "results.csv")
    (tmp_path / "cv.json").write_text(json.dumps({"folds": 3, "config": {"recipe": "instlib"}}))
    summary = pd.DataFrame([{"source": results.SOURCE_LABELS[src], "mix": "none", "mae_mean": np.mean(v),
                             "mae_std": np.std(v, ddof=1)} for src, v in mae.items()])
    shows, _ = results.statement(summary, get_profile("demo"), cv_dir=tmp_path)
    classical = next(s for s in shows if "classical counter" in s)
    assert "within the spread" in classical
    assert classical.endswith("Run by run, on the same test images, real had the lower MAE in 3 of 3 (by 0.50 to "
                              "1.50 cells).")
    assert shows[0].endswith("InST had the lower MAE in 2 of 3 (its MAE lower by -0.50 to +1.00 cells).")
    assert results.paired(tmp_path, "real", "Cell200-s") == "" and results.paired(None, "real", "InST") == ""


def test_metrics_table_and_finite_check():
    s = _summary(real=10.0, InST=9.0)
    t = results.metrics_table(s)
    assert t.loc["real", "MAE"] == "10.00 ± 1.00" and t.loc["real", "runs"] == 5
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
    assert ("density-map head (U-Net decoder, Gaussian targets of σ 5.96-6.1 px, the cells' blob scale measured on "
            "each run's real training images)") in text

    (tmp_path / "official").mkdir()
    official = " ".join(results.protocol_statement(_cv_dir(tmp_path / "official", split="official")))
    assert "official split" in official


def test_statement_says_when_the_recipe_is_not_the_authors(tmp_path):
    paper = get_profile("paper", **{"cv.seeds": [1, 2, 3]})
    summary = _summary(**{"Syn-HC": 40.0, "InST": 26.0})
    _, not_shows = results.statement(summary, paper, cell200=True, cv_dir=_cv_dir(tmp_path, recipe="instlib"))
    assert any("'instlib' recipe" in s for s in not_shows)
    _, not_shows = results.statement(summary, paper, cell200=True, cv_dir=_cv_dir(tmp_path, recipe="authors"))
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
    paper = results.exposure(get_profile("paper"))
    assert "every real image of stain DAPI" in paper[1]
    assert "the official split's training and validation images of stain DAPI" in paper[2] and "test images" not in paper[2]
    assert "as published (it never saw this run's images)" in paper[2]
    named = results.exposure(get_profile("smoke", diffusion_model="tiny", **{"data.names": "*_DAPI_*"}))
    assert "named '*_DAPI_*'" in named[1] and "random weights" in named[2]
