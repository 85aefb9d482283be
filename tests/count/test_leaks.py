"""No leaks from test images, the official split, and one loss for every mixing variant of a comparison."""

from __future__ import annotations

import json
import shutil
import sys

import pandas as pd
import pytest

from instlib.config import SynHCConfig
from instlib import cli
from instlib.config import GridConfig
from instlib.count import cross_validate, load_model
from instlib.count.cv import training_names
from instlib.data.folder import list_samples, read_manifest, write_manifest
from instlib.data.synth import synthesize_from_points
from instlib.errors import DataError, InstlibError

from .conftest import tiny_config

QUICK = dict(epochs=1, finetune_epochs=1, max_steps=1)


@pytest.fixture(scope="module")
def paired(folders, tmp_path_factory):
    """Syn-HC drawn from every image of ``real`` (one each, same name), and ``real`` with an official split."""
    root = tmp_path_factory.mktemp("leaks")
    syn = synthesize_from_points(folders["real"], root / "syn", SynHCConfig(cell_size=8, seed=0), progress=False)
    official = shutil.copytree(folders["real"], root / "official")
    manifest = read_manifest(official)
    manifest["split"] = ["train"] * 12 + ["validation"] * 4 + ["test"] * 4
    write_manifest(official, manifest)
    return {"syn": syn, "official": official, "test": list(manifest["name"][16:])}


@pytest.fixture(scope="module")
def grid(folders, paired, tmp_path_factory):
    out = tmp_path_factory.mktemp("cv") / "cv"
    results = cross_validate(folders["real"], out, tiny_config(**QUICK), GridConfig(mixes=("none", "dacs"), folds=2),
                             sources={"real": [], "syn": [paired["syn"]]}, progress=False)
    return out, results


def test_syn_hc_names_the_real_image_it_came_from(folders, paired):
    manifest = read_manifest(paired["syn"])
    assert list(manifest["origin"]) == [s.name for s in list_samples(folders["real"])]


def test_cv_leaves_out_synthetic_images_drawn_from_the_folds_test_images(grid):
    out, results = grid
    syn = results[results["source"] == "syn"]
    assert len(syn) == 4 and (syn["excluded"] == syn["n_test"]).all()
    assert (results.loc[results["source"] == "real", "excluded"] == 0).all()
    for _, r in syn.iterrows():
        run = json.loads((out / "runs" / f"syn-{r['mix']}-fold{r['fold']}-seed42" / "run.json").read_text())
        assert run["inputs"]["train"]["images"] == 20 - r["n_test"]
    assert pd.read_csv(out / "results.csv")["excluded"].tolist() == results["excluded"].tolist()
    summary = pd.read_csv(out / "summary.csv").set_index(["source", "mix"])
    assert summary.loc[("syn", "none"), "excluded_mean"] == syn["excluded"].iloc[:2].mean() > 0


def test_training_names_are_everything_but_the_folds_test_images(folders, grid):
    out, _ = grid
    everything = {s.name for s in list_samples(folders["real"])}
    for fold in (0, 1):
        tested = set(pd.read_csv(out / "runs" / f"real-none-fold{fold}-seed42" / "predictions.csv")["name"])
        assert set(training_names(folders["real"], fold=fold, folds=2)) == everything - tested
    with pytest.raises(InstlibError, match="fold 2 does not exist"):
        training_names(folders["real"], fold=2, folds=2)


def test_selected_epochs_are_in_the_results(grid):
    _, results = grid
    syn = results[results["source"] == "syn"]
    assert (syn["pretrain_epoch"] == 1).all() and (results["final_epoch"] == 1).all()
    assert results.loc[results["source"] == "real", "pretrain_epoch"].isna().all()
    assert set(results["recipe"]) == {"instlib"} and set(results["split"]) == {"stratified"}


def test_every_variant_of_a_grid_with_dacs_fine_tunes_with_the_same_loss(grid):
    out, results = grid
    for _, r in results.iterrows():
        model = load_model(out / "runs" / f"{r['source']}-{r['mix']}-fold{r['fold']}-seed42" / "model.safetensors")
        assert model.spec.has_density and model.spec.head == "density", (r["source"], r["mix"])


def test_the_mix_never_switches_the_density_loss_on(folders, tmp_path):
    for settings in (dict(head="regression", mix="dacs", density=False), dict(recipe="authors", mix="dacs")):
        with pytest.raises(InstlibError, match="density=True"):  # refused when the settings are made
            tiny_config(**settings, **QUICK)
    with pytest.raises(InstlibError, match="density=True"):
        cross_validate(folders["real"], tmp_path / "cv", tiny_config(head="regression", density=False),
                       GridConfig(mixes=("none", "dacs")), progress=False)


def test_cv_on_the_official_split(paired, tmp_path):
    results = cross_validate(paired["official"], tmp_path / "cv", tiny_config(split="official", **QUICK),
                             sources={"real": [], "syn": [paired["syn"]]}, progress=False)
    assert sorted(results["source"]) == ["real", "syn"] and (results["fold"] == 0).all()
    assert (results["n_test"] == 4).all() and results.set_index("source")["excluded"].to_dict() == {"real": 0, "syn": 4}
    run = json.loads((tmp_path / "cv" / "runs" / "syn-none-fold0-seed42" / "run.json").read_text())
    assert run["inputs"]["val"]["images"] == 4 and run["inputs"]["finetune"]["images"] == 12
    tested = pd.read_csv(tmp_path / "cv" / "runs" / "syn-none-fold0-seed42" / "predictions.csv")["name"]
    assert sorted(tested) == sorted(paired["test"])
    names = training_names(paired["official"], split="official")
    assert len(names) == 16 and not set(names) & set(paired["test"])


def test_count_train_on_the_official_split(paired, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["instlib", *map(str, [
        "count", "train", "--train", paired["syn"], "--finetune", paired["official"], "--test", paired["official"],
        "--out", tmp_path / "run", "--split", "official", "--model", "test_efficientnet", "--no-pretrained",
        "--epochs", 1, "--finetune-epochs", 1, "--max-steps", 1, "--crop-size", 48])])
    with pytest.raises(SystemExit) as exit_:
        cli.main()
    assert exit_.value.code == 0
    assert "4 training images drawn from test images left out" in capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["n"] == 4 and metrics["excluded"] == 4
    assert metrics["produced_by"]["config"]["split"] == "official"


def test_official_split_needs_a_split_column(folders, tmp_path):
    with pytest.raises(DataError, match="no 'split' column"):
        cross_validate(folders["real"], tmp_path / "cv", tiny_config(split="official"), progress=False)


def test_origins_join_several_real_images_and_fall_back_to_style(tmp_path):
    from instlib.data.provenance import drawn_from, format_origin, origins

    assert format_origin(["b", "a", "", "b"]) == "a;b"
    (tmp_path / "new").mkdir()
    write_manifest(tmp_path / "new", [{"name": "x", "count": 1, "origin": "a;b"}, {"name": "y", "count": 1}])
    (tmp_path / "old").mkdir()
    write_manifest(tmp_path / "old", [{"name": "x", "count": 1, "style": "c"}])
    assert origins(tmp_path / "new") == {"x": frozenset({"a", "b"}), "y": frozenset()}
    assert origins(tmp_path / "old") == {"x": frozenset({"c"})}
    assert origins(tmp_path / "nowhere") == {}
    assert drawn_from([frozenset({"a", "b"}), frozenset(), frozenset({"c"})], ["b", "c"]).tolist() == [True, False, True]


def test_the_results_page_can_state_the_protocol(grid):
    from instlib.runs import results

    out, _ = grid
    text = " ".join(results.protocol_statement(out))
    assert "'instlib'" in text and "2-fold" in text and "density-map head" in text
    assert "20 synthetic images (counted once per source and fold)" in text
    assert (results.protocol_table(out).query("source == 'Syn-HC'")["excluded"] > 0).all()
