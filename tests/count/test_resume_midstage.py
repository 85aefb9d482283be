"""A ``kill -9`` in the middle of a training stage: the rerun resumes and ends with the same run.

The child process kills itself with SIGKILL right after a chosen optimiser step, so the kill lands
at an exact place in the middle of an epoch, in the middle of a stage: the resume must restore the
model, the optimiser's moments, the learning-rate position, the epoch counter, the selection so far
and every random generator. Nothing catches SIGKILL, so no cleanup code runs, as in a real crash.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

import instlib

STEPS, EPOCHS = 3, 3  # optimiser steps per epoch, epochs per stage (pre-training, then fine-tuning)

CHILD = """
import os, signal, sys
import torch

torch.set_num_threads(1)
kill_after, args = int(sys.argv[1]), sys.argv[2:]
if kill_after > 0:
    step, done = torch.optim.Adam.step, [0]

    def counting_step(self, *a, **k):
        out = step(self, *a, **k)
        done[0] += 1
        if done[0] == kill_after:
            os.kill(os.getpid(), signal.SIGKILL)
        return out

    torch.optim.Adam.step = counting_step
from instlib.cli import main

sys.argv = ["instlib", *args]
main()
"""


def count_train(folders: dict[str, Path], out: Path, kill_after: int = 0, *extra: str) -> subprocess.CompletedProcess:
    args = ["count", "train", "--train", folders["syn"], "--finetune", folders["real"], "--test", folders["test"],
            "--out", out, "--model", "test_efficientnet", "--no-pretrained", "--epochs", EPOCHS,
            "--finetune-epochs", EPOCHS, "--max-steps", STEPS, "--batch-size", 4, "--crop-size", 48,
            "--lr", "1e-3", "--device", "cpu", *extra]
    env = {**os.environ, "PYTHONPATH": str(Path(instlib.__file__).parents[1]), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", CHILD, str(kill_after), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted(folders, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "run"
    res = count_train(folders, out)
    assert res.returncode == 0, res.stderr
    return out


def assert_same_run(run: Path, ref: Path) -> None:
    a, b = load_file(run / "model.safetensors"), load_file(ref / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (run, ref))
    for m in (ma, mb):
        del m["wall_s"]  # time spent, the one thing a resume changes
    assert ma == mb
    assert (run / "predictions.csv").read_text() == (ref / "predictions.csv").read_text()
    ha, hb = (pd.read_csv(d / "history.csv").drop(columns="seconds") for d in (run, ref))
    pd.testing.assert_frame_equal(ha, hb)


@pytest.mark.slow
@pytest.mark.parametrize("stage, kill_after", [(0, STEPS * 1 + 2), (1, STEPS * (EPOCHS + 1) + 2)],
                         ids=["mid-pretraining", "mid-finetuning"])
def test_kill_9_mid_stage_then_resume(folders, tmp_path: Path, uninterrupted: Path, stage: int, kill_after: int):
    out = tmp_path / "run"
    res = count_train(folders, out, kill_after=kill_after)
    assert res.returncode == -signal.SIGKILL, res.stderr
    ckpt = torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    # killed in the second epoch of the stage: its first epoch is the last one saved
    assert (ckpt["stage"], ckpt["epoch"]) == (stage, 1)
    assert not (out / "metrics.json").exists()

    res = count_train(folders, out)
    assert res.returncode == 0, res.stderr
    assert not (out / "checkpoint.pt").exists()
    assert_same_run(out, uninterrupted)


@pytest.mark.slow
def test_a_moving_average_of_the_weights_resumes_too(folders, tmp_path: Path):
    # The average is state of its own: a resume that restarted it would keep other weights.
    ema = ("--ema", "0.5", "--val-every", "2")
    ref = tmp_path / "whole"
    assert count_train(folders, ref, 0, *ema).returncode == 0
    out = tmp_path / "run"
    assert count_train(folders, out, STEPS * (EPOCHS + 1) + 2, *ema).returncode == -signal.SIGKILL
    assert "ema" in torch.load(out / "checkpoint.pt", map_location="cpu", weights_only=True)
    res = count_train(folders, out, 0, *ema)
    assert res.returncode == 0, res.stderr
    assert_same_run(out, ref)
