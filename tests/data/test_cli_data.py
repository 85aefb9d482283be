"""The data commands through the real entry point: exit codes, messages, nothing left behind."""

import time
from pathlib import Path

import numpy as np
import pytest

from instlib.data.fetch import import_folder
from instlib.data.folder import list_samples, read_manifest
from instlib.data.images import write_image
from instlib.data.points import write_points

from cli_runner import run_cli


def run(capsys, *args) -> tuple[int, str]:
    code, out, err = run_cli(capsys, *args)
    return code, out + err


def test_check_clean_and_broken(capsys, real_folder: Path):
    code, out = run(capsys, "data", "check", real_folder)
    assert code == 0 and "OK (3 images)" in out
    (real_folder / "points" / "220909_GFP-AHPC_A_F2.csv").unlink()
    code, out = run(capsys, "data", "check", real_folder)
    assert code == 1 and "220909_GFP-AHPC_A_F2.jpg: has no points file" in out


@pytest.mark.parametrize("breakage, message", [
    (lambda d: (d / "points" / "220909_GFP-AHPC_A_F0.csv").write_text("x_coord,y_coord\n1,2\n"), "expected columns"),
    (lambda d: (d / "points" / "220909_GFP-AHPC_A_F0.csv").write_text("X,Y\nNaN,2\n"), "NaN"),
    (lambda d: (d / "points" / "220909_GFP-AHPC_A_F0.csv").write_text("X,Y\n5000,2\n"), "outside"),
    (lambda d: (d / "images" / "220909_GFP-AHPC_A_F0.jpg").write_bytes(b"\xff\xd8\xff\xe0trunc"), "cannot be"),
    (lambda d: write_points(d / "points" / "extra.csv", np.zeros((0, 2))), "has no image"),
])
def test_synth_refuses_bad_input_and_writes_nothing(capsys, tmp_path: Path, real_folder: Path, breakage, message):
    breakage(real_folder)
    code, out = run(capsys, "synth", "--out", tmp_path / "out", "--from-points", real_folder)
    assert code == 2 and message in out and str(real_folder) in out
    assert not (tmp_path / "out").exists()


def test_synth_overwrite_protection_and_empty_folder(capsys, tmp_path: Path, real_folder: Path):
    out = tmp_path / "out"
    assert run(capsys, "synth", "--out", out, "--from-points", real_folder, "--seed", "1")[0] == 0
    before = (out / "images" / "220909_GFP-AHPC_A_F1.png").read_bytes()
    code, msg = run(capsys, "synth", "--out", out, "--from-points", real_folder, "--seed", "2")
    assert code == 2 and "--overwrite" in msg
    assert (out / "images" / "220909_GFP-AHPC_A_F1.png").read_bytes() == before
    assert run(capsys, "synth", "--out", out, "--from-points", real_folder, "--seed", "2", "--overwrite")[0] == 0
    (tmp_path / "empty" / "images").mkdir(parents=True)
    code, msg = run(capsys, "synth", "--out", tmp_path / "o2", "--from-points", tmp_path / "empty")
    assert code == 2 and "is empty" in msg


def test_random_synth_and_simulate_commands(capsys, tmp_path: Path):
    code, _ = run(capsys, "synth", "--out", tmp_path / "r", "--n", 3, "--size", 40, 50, "--cells", 1, 5)
    assert code == 0 and len(list_samples(tmp_path / "r")) == 3
    code, _ = run(capsys, "simulate", "--out", tmp_path / "s", "--n", 2, "--size", 40, 50, "--cells", 1, 5,
                  "--color", "dapi")
    assert code == 0 and read_manifest(tmp_path / "s")["count"].between(1, 5).all()
    code, msg = run(capsys, "simulate", "--out", tmp_path / "t", "--n", 2, "--size", 40, 50, "--cells", 9, 5)
    assert code == 2 and "cells" in msg


def test_read_only_output_location(capsys, real_folder: Path):
    code, msg = run(capsys, "synth", "--out", "/sys/instlib-out", "--from-points", real_folder)
    assert code == 2 and "/sys/instlib-out" in msg


def test_fetch_offline_fails_fast_with_instructions(capsys, tmp_path: Path, monkeypatch):
    import instlib.data.fetch as fetch

    monkeypatch.setattr(fetch, "TIMEOUT_S", 3)
    t0 = time.monotonic()
    code, msg = run(capsys, "data", "fetch", "idcia", "--dest", tmp_path / "idcia")
    assert code == 2 and time.monotonic() - t0 < 15
    assert "21970604" in msg and "instlib data import" in msg
    assert not (tmp_path / "idcia").exists()


def test_import_nested_csv_layout_and_dot_images(tmp_path: Path, real_folder: Path):
    src = tmp_path / "download" / "IDCIA" / "nested"
    for s in list_samples(real_folder):
        (src / "imgs").mkdir(parents=True, exist_ok=True)
        (src / "gt").mkdir(exist_ok=True)
        (src / "imgs" / s.image.name).write_bytes(s.image.read_bytes())
        (src / "gt" / s.points.name).write_text(s.points.read_text())
    out = import_folder(tmp_path / "download", tmp_path / "idcia", source="idcia")
    assert [s.name for s in list_samples(out)] == [s.name for s in list_samples(real_folder)]
    assert read_manifest(out)["count"].tolist() == [s.count() for s in list_samples(real_folder)]

    dots = np.zeros((20, 30), np.uint8)
    dots[[2, 5, 17], [3, 20, 29]] = 255
    write_image(tmp_path / "vgg" / "001cell.png", np.full((20, 30), 40, np.uint8))
    write_image(tmp_path / "vgg" / "001dots.png", np.dstack([dots, 0 * dots, 0 * dots]))
    out = import_folder(tmp_path / "vgg", tmp_path / "cells", fmt="dots")
    _, pts = list_samples(out)[0].load()
    assert sorted(map(tuple, pts)) == [(3.5, 2.5), (20.5, 5.5), (29.5, 17.5)]
