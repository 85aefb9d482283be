"""``instlib style ...`` end to end on the tiny models, and how user errors are reported."""

from __future__ import annotations

import sys

import pytest

from instlib.cli import main
from instlib.data.folder import read_manifest
from instlib.style import load_token


def run(monkeypatch, *args) -> int:
    monkeypatch.setattr(sys, "argv", ["instlib", *map(str, args)])
    with pytest.raises(SystemExit) as exit_:
        main()
    return exit_.value.code


def test_train_transfer_filter(monkeypatch, capsys, folders, tmp_path):
    token = tmp_path / "tok.safetensors"
    assert run(monkeypatch, "style", "train", "--style", folders["real"], "--out", token, "--steps", 2,
               "--model", "tiny", "--resolution", 32, "--device", "cpu") == 0
    assert load_token(token).info["steps"] == 2 and (tmp_path / "tok.loss.csv").is_file()
    out = tmp_path / "styled"
    assert run(monkeypatch, "style", "transfer", "--content", folders["synhc"], "--style", folders["real"],
               "--token", token, "--out", out, "--model", "tiny", "--resolution", 32, "--steps", 10,
               "--strength", 0.5, "--no-adain", "--inversion", "noise", "--reference-timesteps",
               "--batch-size", 2, "--seed", 3, "--shard", "1/2", "--device", "cpu") == 0
    manifest = read_manifest(out)
    assert list(manifest["name"]) == ["field1", "field3"]
    assert not manifest["adain"].any() and manifest["reference_timesteps"].all()
    assert set(manifest["inversion"]) == {"noise"} and set(manifest["base_seed"]) == {3}
    assert run(monkeypatch, "style", "filter", out, "--out", tmp_path / "kept", "--min-fidelity", 0) == 0
    assert "kept 2 of 2 images" in capsys.readouterr().out
    assert run(monkeypatch, "style", "fidelity", folders["synhc"], "--csv", tmp_path / "f.csv") == 0
    assert "4 images, mean recall" in capsys.readouterr().out and (tmp_path / "f.csv").is_file()


def test_style_options_land(monkeypatch, folders, tmp_path):
    token = tmp_path / "tok.safetensors"
    assert run(monkeypatch, "style", "train", "--style", folders["real"], "--out", token, "--steps", 1,
               "--model", "tiny", "--resolution", 32, "--device", "cpu", "--names", "field[12]",
               "--geometry", "center-crop", "--reference-clip-input") == 0
    info = load_token(token).info
    assert load_token(token).reference_clip_input and info["geometry"] == "center-crop"
    assert info["names"] == ["field1", "field2"] and info["select"]["names"] == "field[12]"
    out = tmp_path / "styled"
    assert run(monkeypatch, "style", "transfer", "--content", folders["synhc"], "--style", folders["real"],
               "--token", token, "--out", out, "--model", "tiny", "--resolution", 32, "--steps", 4,
               "--tiling", "grid", "--names", "field[03]", "--device", "cpu") == 0
    manifest = read_manifest(out)
    assert list(manifest["name"]) == ["field0", "field3"] and set(manifest["tiling"]) == {"grid"}
    assert run(monkeypatch, "style", "transfer", "--content", folders["synhc"], "--style", folders["real"],
               "--token", token, "--out", tmp_path / "s2", "--model", "tiny", "--stain", "DAPI", "--device",
               "cpu") == 2


def test_user_errors_are_printed(monkeypatch, capsys, folders, tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_text("nope")
    code = run(monkeypatch, "style", "transfer", "--content", folders["synhc"], "--style", folders["real"],
               "--token", bad, "--out", tmp_path / "o", "--model", "tiny", "--device", "cpu")
    err = capsys.readouterr().err
    assert code == 2 and f"error: {bad}: is not a readable safetensors file" in err
    assert run(monkeypatch, "style", "transfer", "--content", folders["synhc"], "--style", folders["real"],
               "--token", bad, "--out", tmp_path / "o", "--model", "tiny", "--strength", 0) == 2
    assert "Invalid value for '--strength': Input should be greater than 0" in capsys.readouterr().err


def test_style_and_count_commands_describe_their_own_model_option():
    from typer.testing import CliRunner

    from instlib import cli

    style = CliRunner().invoke(cli.app, ["style", "transfer", "--help"], env={"COLUMNS": "200"}).output
    count = CliRunner().invoke(cli.app, ["count", "train", "--help"], env={"COLUMNS": "200"}).output
    assert "diffusers folder" in style and "timm backbone" not in style
    assert "timm backbone" in count and "diffusers folder" not in count
