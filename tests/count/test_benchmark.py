"""The counting benchmark runs end to end on tiny settings and prints every comparison it promises."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

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
