"""Training runs end to end: learning, outputs, determinism, resume, and bad input."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pandas as pd
import pytest
import torch

from instlib import cli
from instlib.count import bank as bank_mod
from instlib.count import inputs, load_model, loop, predict, train
from instlib.count.train import train_run
from instlib.data.folder import list_samples
from instlib.errors import DataError, InstlibError

from .conftest import tiny_config


def test_end_to_end_beats_predicting_the_training_mean(folders, tmp_path):
    config = tiny_config(epochs=16, finetune_epochs=16, crops_per_epoch=80, seed=0)
    out = tmp_path / "run"
    metrics = train_run([folders["syn"]], folders["test"], out, config, finetune_dir=folders["real"], progress=False)

    preds = pd.read_csv(out / "predictions.csv")
    train_mean = np.mean([s.count() for s in list_samples(folders["real"])])
    baseline = float(np.mean(np.abs(preds["true"] - train_mean)))
    assert metrics["mae"] < 0.75 * baseline
    assert metrics["center"]["mae"] < float(np.mean(np.abs(preds["true_center"] - preds["true_center"].mean())))

    # The files of a run and what they hold.
    assert json.loads((out / "metrics.json").read_text())["mae"] == metrics["mae"]
    assert {"mae", "rmse", "acp", "n", "evaluation", "center", "selected_epochs", "produced_by"} <= set(metrics)
    assert metrics["n"] == 8 and metrics["produced_by"]["config"]["model"] == "test_efficientnet"
    assert {"name", "true", "pred", "pred_center", "true_center"} <= set(preds.columns)
    history = pd.read_csv(out / "history.csv")
    assert {"stage", "epoch", "train_loss", "val_mae"} <= set(history.columns)
    assert list(history.groupby("stage", sort=False).size()) == [17, 17]  # epoch 0 (start) + 16 each
    assert history["selected"].sum() == 2
    assert not (out / "checkpoint.pt").exists()
    model = load_model(out / "model.safetensors")
    assert model.spec.channels == (1,) and model.spec.crop_size == 48

    # predict() counts the same images the same way.
    again = predict(out, folders["test"])
    assert np.allclose(again["pred"], preds["pred"], rtol=1e-4, atol=1e-3)
    assert np.allclose(again["true"], preds["true"])


def test_same_seed_same_result(folders, tmp_path):
    config = tiny_config(seed=7)
    a = train_run([folders["syn"]], folders["test"], tmp_path / "a", config, finetune_dir=folders["real"],
                  progress=False)
    b = train_run([folders["syn"]], folders["test"], tmp_path / "b", config, finetune_dir=folders["real"],
                  progress=False)
    assert a["mae"] == b["mae"] and a["center"] == b["center"]
    pa, pb = pd.read_csv(tmp_path / "a" / "predictions.csv"), pd.read_csv(tmp_path / "b" / "predictions.csv")
    pd.testing.assert_frame_equal(pa, pb)


def test_resume_after_a_kill_gives_the_same_run(folders, tmp_path, monkeypatch):
    config = tiny_config(epochs=3, finetune_epochs=2, seed=3, val_every=1)  # validation counted below
    args = ([folders["syn"]], folders["test"])
    whole = train_run(*args, tmp_path / "whole", config, finetune_dir=folders["real"], progress=False)

    real_validate, calls = loop.validate, []

    def killed_in_finetuning(*a, **k):
        calls.append(1)
        if len(calls) == 6:  # 1 + 3 pre-training validations, then the fine-tuning start, then epoch 1
            raise KeyboardInterrupt
        return real_validate(*a, **k)

    monkeypatch.setattr(loop, "validate", killed_in_finetuning)
    with pytest.raises(KeyboardInterrupt):
        train_run(*args, tmp_path / "killed", config, finetune_dir=folders["real"], progress=False)
    assert (tmp_path / "killed" / "checkpoint.pt").is_file()
    assert not (tmp_path / "killed" / "metrics.json").exists()

    monkeypatch.setattr(loop, "validate", real_validate)
    resumed = train_run(*args, tmp_path / "killed", config, finetune_dir=folders["real"], progress=False)
    assert resumed["mae"] == whole["mae"] and resumed["selected_epochs"] == whole["selected_epochs"]
    h1 = pd.read_csv(tmp_path / "whole" / "history.csv").drop(columns="seconds")
    h2 = pd.read_csv(tmp_path / "killed" / "history.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(h1, h2)

    # A finished run is returned as it is, without training again.
    monkeypatch.setattr(train, "fit", lambda *a, **k: pytest.fail("trained a finished run again"))
    assert train_run(*args, tmp_path / "killed", config, finetune_dir=folders["real"],
                     progress=False)["mae"] == whole["mae"]


def test_a_folder_with_another_run_is_left_alone(folders, tmp_path):
    out = tmp_path / "run"
    train_run([folders["real"]], folders["test"], out, tiny_config(epochs=1), progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(DataError, match=r"holds another counting run \(settings differ in \['lr'\]\)"):
        train_run([folders["real"]], folders["test"], out, tiny_config(epochs=1, lr=0.5), progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not an instlib counting run"):
        train_run([folders["real"]], folders["test"], tmp_path / "other", tiny_config(epochs=1), progress=False)


def test_test_folder_without_points(folders, tmp_path):
    bad = tmp_path / "test-no-points"
    shutil.copytree(folders["test"] / "images", bad / "images")
    with pytest.raises(DataError, match="has no points file") as err:
        train_run([folders["real"]], bad, tmp_path / "run", tiny_config(), progress=False)
    assert bad.name in str(err.value.path.parent.parent)
    assert not (tmp_path / "run").exists()


def test_mismatched_channel_counts(folders, tmp_path):
    with pytest.raises(DataError, match=r"has 3 channel\(s\), but the real training images .* 1-channel") as err:
        train_run([folders["real"]], folders["rgb"], tmp_path / "run", tiny_config(), progress=False)
    assert err.value.path.parent.parent == folders["rgb"]
    assert not (tmp_path / "run").exists()

    train_run([folders["real"]], folders["test"], tmp_path / "gray", tiny_config(epochs=1), progress=False)
    with pytest.raises(DataError, match=r"has 3 channel\(s\), but the model .* was trained on 1-channel"):
        predict(tmp_path / "gray", folders["rgb"])


def test_mixing_needs_a_target_folder(folders, tmp_path):
    with pytest.raises(InstlibError, match="needs --mix-with"):
        train_run([folders["syn"]], folders["test"], tmp_path / "run", tiny_config(mix="cutmix"), progress=False)
    with pytest.raises(InstlibError, match="unknown mixing"):
        train_run([folders["syn"]], folders["test"], tmp_path / "run", tiny_config(mix="mixup"), progress=False)


def test_dacs_never_reads_real_labels(folders, garbage_points_copy, tmp_path, monkeypatch):
    # The real folder's points files are unreadable (reading one raises), and every read is recorded.
    read = []
    real_read_points = bank_mod.read_points
    monkeypatch.setattr(bank_mod, "read_points", lambda path, **k: read.append(path) or real_read_points(path, **k))
    metrics = train_run([folders["syn"]], folders["test"], tmp_path / "dacs", tiny_config(mix="dacs", epochs=2, density=True),
                        mix_with=garbage_points_copy, progress=False)
    assert np.isfinite(metrics["mae"])
    assert read and not [p for p in read if garbage_points_copy in p.parents]
    assert load_model(tmp_path / "dacs" / "model.safetensors").spec.has_density
    # cutmix is supervised: it must read them, and says which file is bad.
    with pytest.raises(DataError, match="expected columns 'X' and 'Y'"):
        train_run([folders["syn"]], folders["test"], tmp_path / "cutmix", tiny_config(mix="cutmix"),
                  mix_with=garbage_points_copy, progress=False)


def test_predict_on_images_without_points(folders, tmp_path):
    train_run([folders["real"]], folders["test"], tmp_path / "run", tiny_config(epochs=1), progress=False)
    images_only = tmp_path / "new"
    shutil.copytree(folders["test"] / "images", images_only / "images")
    df = predict(tmp_path / "run" / "model.safetensors", images_only)
    assert list(df.columns) == ["name", "pred", "pred_center"] and len(df) == 8
    assert (df["pred"] >= 0).all() and (df["pred"] >= df["pred_center"] - 1e-3).all()


def test_cli_train_predict_and_errors(folders, tmp_path, monkeypatch, capsys):
    def run_cli(*args):
        monkeypatch.setattr(sys, "argv", ["instlib", *map(str, args)])
        try:
            cli.main()
        except SystemExit as exc:
            return exc.code
        return 0

    out = tmp_path / "run"
    code = run_cli("count", "train", "--train", folders["syn"], "--finetune", folders["real"], "--test",
                   folders["test"], "--out", out, "--model", "test_efficientnet", "--no-pretrained", "--epochs", 1,
                   "--finetune-epochs", 1, "--crop-size", 48, "--mix", "cutmix", "--mix-with", folders["real"])
    assert code == 0, capsys.readouterr().err
    assert "MAE" in capsys.readouterr().out and (out / "metrics.json").is_file()
    assert json.loads((out / "metrics.json").read_text())["produced_by"]["config"]["mix"] == "cutmix"

    assert run_cli("count", "predict", "--model", out, "--data", folders["test"], "--out", tmp_path / "p.csv") == 0
    assert len(pd.read_csv(tmp_path / "p.csv")) == 8

    code = run_cli("count", "predict", "--model", tmp_path / "nowhere", "--data", folders["test"], "--out",
                   tmp_path / "q.csv")
    err = capsys.readouterr().err
    assert code == 2 and "error:" in err and "nowhere" in err and not (tmp_path / "q.csv").exists()

    code = run_cli("count", "train", "--train", folders["real"], "--test", folders["test"], "--out", tmp_path / "x",
                   "--model", "efficientnet_b0", "--pretrained", "--epochs", 1)
    # Offline here (or online with weights): either a clear error at once, or a run. Never a traceback.
    assert code in (0, 2)
    if code == 2:
        assert "ImageNet weights" in capsys.readouterr().err


def test_determinism_does_not_depend_on_the_global_seed(folders, tmp_path):
    torch.manual_seed(123)
    a = train_run([folders["real"]], folders["test"], tmp_path / "a", tiny_config(epochs=1), progress=False)
    torch.manual_seed(456)
    b = train_run([folders["real"]], folders["test"], tmp_path / "b", tiny_config(epochs=1), progress=False)
    assert a["mae"] == b["mae"]


def test_missing_imagenet_weights_fail_before_any_decoding(folders, tmp_path, monkeypatch):
    from instlib.count import backbone, cv

    monkeypatch.setattr(backbone, "_weights_cached", lambda name: False)
    monkeypatch.setattr(backbone, "_hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(inputs, "load_bank", lambda *a, **k: pytest.fail("decoded images first"))
    monkeypatch.setattr(cv, "load_bank", lambda *a, **k: pytest.fail("decoded images first"))
    config = tiny_config(model="efficientnet_b0", pretrained=True)
    with pytest.raises(InstlibError, match="ImageNet weights for 'efficientnet_b0'"):
        train_run([folders["real"]], folders["test"], tmp_path / "run", config, progress=False)
    with pytest.raises(InstlibError, match="ImageNet weights"):
        cv.cross_validate(folders["real"], tmp_path / "cv", config, progress=False)
    assert not (tmp_path / "run").exists() and not (tmp_path / "cv").exists()
