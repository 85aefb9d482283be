"""Epoch selection: a trained epoch always wins, the best (or the last) one is kept, and fine-tuning starts from it."""

from __future__ import annotations

import json

import pandas as pd
import torch

from instlib.count import load_model, loop
from instlib.count.train import train_run

from .conftest import tiny_config


def _weights(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([v.detach().flatten().double().cpu() for v in model.state_dict().values()
                      if v.is_floating_point()])


def _scripted_validation(monkeypatch, maes: list[float]) -> list[torch.Tensor]:
    """Make validation return ``maes`` in turn; returns the weights seen at each validation."""
    seen, script = [], list(maes)

    def validate(model, val, config, device):
        seen.append(_weights(model))
        return script.pop(0)

    monkeypatch.setattr(loop, "validate", validate)
    return seen


def _two_stage_run(folders, out, keep: str) -> dict:
    """Pre-train 3 epochs on Syn-HC, fine-tune 2 on real, keeping epochs by ``keep``; returns the metrics."""
    return train_run([folders["syn"]], folders["test"], out,
                     tiny_config(epochs=3, finetune_epochs=2, max_steps=2, keep=keep, val_every=1),
                     finetune_dir=folders["real"], progress=False)


def test_the_kept_epoch_has_the_lowest_mae_and_fine_tuning_starts_from_it(folders, tmp_path, monkeypatch):
    # Pre-training: the starting weights (epoch 0) score best, then epochs 1-3; fine-tuning: 0, 1, 2.
    seen = _scripted_validation(monkeypatch, [0.0, 5.0, 3.0, 4.0, 0.5, 2.0, 1.0])
    out = tmp_path / "run"
    metrics = _two_stage_run(folders, out, "best")

    # The untrained start never wins (the authors' min_loss = inf), however well it scores.
    assert metrics["selected_epochs"] == {"pretrain": 2, "finetune": 2}
    assert json.loads((out / "metrics.json").read_text())["selected_epochs"] == {"pretrain": 2, "finetune": 2}
    assert not torch.equal(seen[0], seen[2])
    # Fine-tuning starts from pre-training's epoch 2 (seen at call 2), not from its last epoch (call 3).
    assert torch.equal(seen[4], seen[2]) and not torch.equal(seen[4], seen[3])
    # The saved model is fine-tuning's epoch 2, not its start or another epoch.
    saved = _weights(load_model(out / "model.safetensors"))
    assert torch.equal(saved, seen[6]) and not torch.equal(saved, seen[5])
    history = pd.read_csv(out / "history.csv")
    assert history.loc[history["selected"], ["stage", "epoch"]].values.tolist() == [["pretrain", 2], ["finetune", 2]]


def test_a_stage_whose_training_never_helps_still_returns_a_trained_epoch(folders, tmp_path, monkeypatch):
    seen = _scripted_validation(monkeypatch, [0.0, 9.0, 8.0])
    metrics = train_run([folders["real"]], folders["test"], tmp_path / "run",
                        tiny_config(epochs=2, max_steps=1, keep="best", val_every=1), progress=False)
    assert metrics["selected_epochs"] == {"train": 2}
    assert torch.equal(_weights(load_model(tmp_path / "run" / "model.safetensors")), seen[2])


def test_keep_last_keeps_each_stages_last_epoch_whatever_validation_says(folders, tmp_path, monkeypatch):
    # Validation prefers pre-training's epoch 1 and fine-tuning's epoch 1; 'last' keeps epochs 3 and 2.
    seen = _scripted_validation(monkeypatch, [9.0, 1.0, 5.0, 7.0, 9.0, 1.0, 8.0])
    out = tmp_path / "run"
    metrics = _two_stage_run(folders, out, "last")
    assert metrics["selected_epochs"] == {"pretrain": 3, "finetune": 2}
    assert torch.equal(seen[4], seen[3])  # fine-tuning starts from pre-training's last epoch
    assert torch.equal(_weights(load_model(out / "model.safetensors")), seen[6])
    history = pd.read_csv(out / "history.csv")
    assert history["val_mae"].tolist() == [9.0, 1.0, 5.0, 7.0, 9.0, 1.0, 8.0]  # recorded all the same


def test_validating_every_few_epochs_chooses_among_the_validated_ones_and_always_the_last(folders, tmp_path,
                                                                                          monkeypatch):
    # 5 epochs, validated at 0 (the start), 2, 4 and 5 (the last): epoch 4 scores best and is kept.
    seen = _scripted_validation(monkeypatch, [0.0, 6.0, 2.0, 3.0])
    out = tmp_path / "run"
    metrics = train_run([folders["real"]], folders["test"], out,
                        tiny_config(epochs=5, max_steps=1, keep="best", val_every=2), progress=False)
    assert len(seen) == 4
    assert metrics["selected_epochs"] == {"train": 4}
    assert torch.equal(_weights(load_model(out / "model.safetensors")), seen[2])
    history = pd.read_csv(out / "history.csv")
    assert history["epoch"].tolist() == [0, 1, 2, 3, 4, 5]  # every epoch's loss is recorded
    assert history["val_mae"].isna().tolist() == [False, True, False, True, False, False]


def test_a_moving_average_is_what_is_validated_and_kept(folders, tmp_path, monkeypatch):
    # decay ~0: the average is the last weights; decay 0.9: it lags behind them.
    runs = {}
    for name, decay in (("raw", 0.0), ("tiny", 1e-9), ("slow", 0.9)):
        seen = _scripted_validation(monkeypatch, [1.0] * 3)
        train_run([folders["real"]], folders["test"], tmp_path / name,
                  tiny_config(epochs=2, max_steps=3, keep="last", val_every=1, ema=decay), progress=False)
        runs[name] = (seen, _weights(load_model(tmp_path / name / "model.safetensors")))
    raw, tiny, slow = (runs[k][1] for k in ("raw", "tiny", "slow"))
    assert torch.allclose(tiny, raw, atol=1e-6)
    assert (slow - raw).abs().max() > 1e-3
    assert torch.equal(runs["slow"][0][-1], slow)  # the validated weights are the kept average
