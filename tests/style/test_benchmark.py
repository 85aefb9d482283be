"""The throughput benchmark runs end to end (tiny model, tiny sizes) and prints both pipelines."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_style.py"


def test_benchmark_smoke(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--model", "tiny", "--resolution", "32", "--images", "2",
                                      "--batch-size", "2", "--steps", "4", "--threads", "1"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    out = capsys.readouterr().out
    assert "batched" in out and "reference" in out and "speed-up of batched over reference" in out
    assert "no GPU here" in out or "% peak" in out


def test_prior_benchmark_smoke(monkeypatch, capsys):
    script = SCRIPT.with_name("bench_prior.py")
    monkeypatch.setattr(sys, "argv", [str(script), "--only", "transfer", "--sizes", "40x56", "--tile", "32",
                                      "--tiled-steps", "2", "--threads", "1"])
    runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "tiled = ddim 35 steps, guidance 10, 32 px tiles" in out and "whole image" in out
    assert "transfer 40 x 56: tiled" in out and "(est. from 2 steps)" in out and "speed-up" in out
