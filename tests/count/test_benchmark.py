"""The counting benchmark runs end to end on tiny settings and prints every comparison it promises."""

from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pandas as pd

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_count.py"


def test_count_benchmark_smoke(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [str(SCRIPT), "--model", "test_efficientnet", "--crop", "64", "--images", "2",
                                      "--steps", "1", "--rounds", "1", "--threads", "1",
                                      "--architectures", "test_efficientnet,unet16"])
    runpy.run_path(str(SCRIPT), run_name="__main__")
    out = capsys.readouterr().out
    assert "training throughput" in out and "ratio" in out
    rows = [line.split() for line in out.splitlines() if line.strip().startswith(("test_efficientnet ", "unet16 "))]
    assert [r[0] for r in rows] == ["test_efficientnet", "unet16"]
    assert "(1.00x)" in rows[0] and all("inference" in " ".join(r) for r in rows)


def test_the_defaults_study_compares_each_variant_with_the_defaults_over_replicates(monkeypatch, capsys, tmp_path):
    script = SCRIPT.with_name("count_defaults.py")
    out = tmp_path / "study"
    monkeypatch.setattr(sys, "argv", [str(script), "--out", str(out), "--size", "64x80", "--train", "5", "--test", "3",
                                      "--cells", "2,20", "--replicates", "2", "--variants", "default,unet16,sigma x2",
                                      "--set", "epochs=1", "--set", "crop_size=32", "--set", "crops_per_epoch=8",
                                      "--set", "model=test_efficientnet"])
    runpy.run_path(str(script), run_name="__main__")
    table = pd.read_csv(out / "comparisons.csv")
    assert table["variant"].tolist() == ["unet16", "sigma x2", "classical"]
    assert (table["n_images"] == 6).all()  # 3 test images in each of 2 replicates, paired across variants
    assert table["p_holm"].between(0, 1).all() and (out / "comparisons.png").stat().st_size > 0
    # each replicate trains with its own seed on its own data
    default = json.loads((out / "runs" / "default" / "r1" / "metrics.json").read_text())
    assert default["produced_by"]["config"]["seed"] == 43
    sigma = {r: json.loads((out / "runs" / r / "r0" / "run.json").read_text())["config"]["sigma"]
             for r in ("default", "sigma x2")}
    assert sigma["default"] == "auto" and sigma["sigma x2"] > 0
    assert set(pd.read_csv(out / "by_stain.csv")["variant"]) == {"default", "unet16", "sigma x2", "classical"}
