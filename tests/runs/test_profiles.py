"""Profiles: the registry, overrides, clear errors for unknown names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from instlib.cli import app
from instlib.errors import InstlibError
from instlib.runs import profiles as prof
from instlib.runs.profiles import PROFILES, get_profile, parse_overrides, resolve_models


def test_registry_has_the_three_profiles_of_the_design():
    assert list(PROFILES) == ["smoke", "demo", "paper"]
    assert PROFILES["smoke"].diffusion_model == "prior" and not PROFILES["smoke"].random_diffusion
    assert PROFILES["smoke"].simulated_data
    assert PROFILES["demo"].diffusion_model == "auto"
    paper = PROFILES["paper"]
    assert paper.diffusion_model == "CompVis/stable-diffusion-v1-4"
    assert paper.image_encoder == "openai/clip-vit-large-patch14"
    assert (paper.count.model, paper.count.pretrained, paper.count.recipe) == ("efficientnet_b0", True, "authors")
    assert paper.data.real == "idcia" and paper.cv.folds == 5 and paper.transfer.strength == 0.7
    assert paper.transfer.resolution == paper.tokens.resolution == 512
    assert paper.transfer.steps == 50 and paper.transfer.guidance == 10.0


def test_unknown_profile_lists_the_valid_ones():
    with pytest.raises(InstlibError, match="unknown profile 'fast'; valid profiles: smoke, demo, paper"):
        get_profile("fast")


def test_unknown_parameter_lists_the_valid_ones():
    with pytest.raises(InstlibError) as info:
        get_profile("smoke", n_images=3)
    msg = str(info.value)
    assert "n_images" in msg and "valid ones:" in msg
    for name in ("data.n_real", "diffusion_model", "count.epochs", "cv.folds"):
        assert name in msg
    with pytest.raises(InstlibError, match="count.epoch"):  # a section's field, misspelt
        get_profile("smoke", **{"count.epoch": 3})


def test_overrides_are_converted_to_the_field_types():
    p = get_profile("smoke", **{"count.epochs": "3", "count.pretrained": "true", "sweep.strengths": "[0.5, 0.8]",
                                "cv.seeds": [1, 2], "data.cells": "[2, 9]", "tokens.lr": "1e-3",
                                "image_encoder": "null", "data.cell200": None})
    assert p.count.epochs == 3 and p.count.pretrained is True and p.sweep.strengths == (0.5, 0.8)
    assert p.cv.seeds == (1, 2) and p.data.cells == (2, 9) and p.tokens.lr == 1e-3 and p.image_encoder is None
    assert get_profile("smoke", **{"count.epochs": None}).count.epochs == PROFILES["smoke"].count.epochs  # kept
    # A whole section, as papermill passes it to a notebook: the given settings change, the others stay.
    q = get_profile("smoke", count={"epochs": 4, "lr": 5e-4})
    assert (q.count.epochs, q.count.lr, q.count.crop_size) == (4, 5e-4, PROFILES["smoke"].count.crop_size)
    assert get_profile("smoke", count="{epochs: 5}").count.epochs == 5  # YAML text from --set
    # the paper profile's reference CLIP input can be turned off (token training honours it: tests/style)
    assert get_profile("paper", **{"tokens.reference_clip_input": "false"}).tokens.reference_clip_input is False


@pytest.mark.parametrize("field, value", [("count.epochs", "many"), ("count.epochs", 1.5),
                                          ("count.pretrained", "maybe"), ("data.cells", "[1, 2, 3]"),
                                          ("sweep.strengths", "{a: 1}"), ("count", "[1, 2]")])
def test_bad_values_name_the_field_and_type(field, value):
    with pytest.raises(InstlibError, match=f"profile parameter {field}"):
        get_profile("smoke", **{field: value})


def test_section_settings_are_checked_as_the_stage_checks_them():
    with pytest.raises(InstlibError, match="profile parameter count: unknown counting head 'dots'"):
        get_profile("smoke", **{"count.head": "dots"})
    # A new recipe brings its settings, as TrainConfig.updated does.
    assert get_profile("demo", **{"count.recipe": "authors"}).count.head == "regression"


def test_string_fields_keep_strings():
    p = get_profile("paper", diffusion_model="/models/tiny-sd", **{"data.real": "/data/idcia"})
    assert p.diffusion_model == "/models/tiny-sd" and p.data.real == "/data/idcia"


def test_parameters_are_json_like():
    params = PROFILES["paper"].parameters()
    json.dumps(params)
    assert params["density_categories"][0] == [0, 49] and params["count"]["recipe"] == "authors"
    assert set(params) == set(prof.SETTINGS)
    assert PROFILES["smoke"].parameters(["cv"]) == {"cv": {"folds": 2, "seeds": [42], "mixes": ["none", "cutmix", "dacs"]}}


def test_a_notebook_reads_only_what_it_declares():
    p = prof.declared_only(PROFILES["smoke"], {"count", "data"})
    assert p.count.epochs == 1 and p.simulated_data
    with pytest.raises(InstlibError, match="'cv'.*`cv = None`"):
        p.cv
    with pytest.raises(InstlibError, match="'diffusion_model'"):
        p.random_diffusion  # a property reads the fields it is made of
    assert PROFILES["smoke"].cv.folds == 2  # the profile itself is untouched


def test_parse_overrides():
    assert parse_overrides(["a=1", " b = x=y "]) == {"a": "1", "b": "x=y"}
    with pytest.raises(InstlibError, match="KEY=VALUE"):
        parse_overrides(["novalue"])


def test_auto_model_falls_back_to_a_trained_prior_without_a_cached_sd14(monkeypatch):
    monkeypatch.setattr(prof, "cached_sd14", lambda: None)
    assert resolve_models(PROFILES["demo"]).diffusion_model == prof.PRIOR
    assert not resolve_models(PROFILES["demo"]).random_diffusion
    monkeypatch.setattr(prof, "cached_sd14", lambda: "/cache/sd14")
    demo = resolve_models(PROFILES["demo"])
    assert demo.diffusion_model == prof.SD14 and demo.image_encoder == prof.CLIP_L14
    assert not demo.random_diffusion
    assert resolve_models(PROFILES["paper"]) == PROFILES["paper"]


def test_cli_show_and_errors():
    runner = CliRunner()
    res = runner.invoke(app, ["reproduce", "--profile", "smoke", "--set", "count.epochs=4", "--show"])
    assert res.exit_code == 0, res.output
    assert "profile: smoke" in res.output and yaml.safe_load(res.output)["count"]["epochs"] == 4
    res = runner.invoke(app, ["reproduce", "--profile", "nope", "--show"])
    assert res.exit_code != 0 and "valid profiles: smoke, demo, paper" in str(res.exception)
    res = runner.invoke(app, ["reproduce", "--profile", "smoke", "--set", "bogus=1", "--show"])
    assert res.exit_code != 0 and "bogus" in str(res.exception) and "valid ones" in str(res.exception)


def test_cached_sd14_is_found_offline_in_the_hub_cache(tmp_path):
    def put(repo: str, files: list[str]) -> Path:
        root = tmp_path / ("models--" + repo.replace("/", "--"))
        snap = root / "snapshots" / ("1" * 40)
        for f in files:
            (snap / f).parent.mkdir(parents=True, exist_ok=True)
            (snap / f).write_text("{}")
        (root / "refs").mkdir(exist_ok=True)
        (root / "refs" / "main").write_text("1" * 40)
        return snap

    sd_files = ["unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                "text_encoder/config.json", "tokenizer/vocab.json"]
    snap = put(prof.SD14, sd_files)
    assert prof.cached_sd14(str(tmp_path)) is None  # CLIP ViT-L/14 is missing
    put(prof.CLIP_L14, ["config.json"])
    assert prof.cached_sd14(str(tmp_path)) == str(snap)


def test_a_single_value_fills_a_list_field_and_numbers_fill_string_fields():
    p = get_profile("smoke", **{"cv.mixes": "none", "cv.seeds": "7", "data.real": 2024, "data.cell200": "none"})
    assert p.cv.mixes == ("none",) and p.cv.seeds == (7,) and p.data.real == "2024" and p.data.cell200 is None
    assert get_profile("smoke", **{"cv.mixes": "[none, dacs]"}).cv.mixes == ("none", "dacs")
    assert get_profile("smoke", **{"data.real": "[a]", "data.cell200": "/data/2024"}).data.real == "[a]"
    with pytest.raises(InstlibError, match=r"profile parameter density_categories.0: Tuple should have at most 2"):
        get_profile("smoke", density_categories="[[1, 2, 3]]")


def test_cell_size_is_a_number_or_auto():
    assert get_profile("demo").synth.cell_size == "auto" and get_profile("paper").synth.cell_size == 15
    assert get_profile("demo", **{"synth.cell_size": "12"}).synth.cell_size == 12
    with pytest.raises(InstlibError, match="synth.cell_size: cell size must be a number of pixels > 0 or 'auto'"):
        get_profile("demo", **{"synth.cell_size": "big"})
