from pathlib import Path

import numpy as np
import pytest

from instlib.data.folder import (check_folder, list_samples, prepare_output, read_manifest, validate_folder,
                                 write_manifest)
from instlib.data.images import write_image
from instlib.data.points import write_points
from instlib.errors import DataError


def test_samples_pair_images_and_points(real_folder: Path):
    samples = list_samples(real_folder)
    assert [s.name for s in samples] == sorted(s.name for s in samples) and len(samples) == 3
    img, pts = samples[-1].load()
    assert img.shape == (96, 128, 3) and len(pts) == samples[-1].count() == 40


def test_check_reports_every_problem_at_once(real_folder: Path):
    (real_folder / "images" / "orphan.png").write_bytes(b"\x89PNG broken")
    write_points(real_folder / "points" / "lonely.csv", np.zeros((0, 2)))
    (real_folder / "images" / "notes.txt").write_text("hello")
    first = real_folder / "points" / "220909_GFP-AHPC_A_F0.csv"
    first.write_text("X,Y\n500,1\n")
    problems = {(p.path.name, p.message.split(" ")[0]) for p in check_folder(real_folder)}
    assert ("orphan.png", "has") in problems  # no points file
    assert ("lonely.csv", "has") in problems  # no image
    assert ("notes.txt", "is") in problems
    assert (first.name, "1") in problems  # "1 of 1 points lie outside"
    with pytest.raises(DataError, match=r"more; run 'instlib data check"):
        validate_folder(real_folder)


def test_empty_and_missing_folders(tmp_path: Path):
    (tmp_path / "e" / "images").mkdir(parents=True)
    assert "is empty" in check_folder(tmp_path / "e")[0].message
    assert "no such folder" in check_folder(tmp_path / "nope")[0].message
    assert "has no 'images/'" in check_folder(tmp_path)[0].message


def test_manifest_counts_are_checked_and_shards_merge(real_folder: Path):
    names = [s.name for s in list_samples(real_folder)]
    write_manifest(real_folder, [{"name": names[0], "count": 999}], shard=(0, 2))
    write_manifest(real_folder, [{"name": n, "count": 0} for n in names[1:]], shard=(1, 2))
    assert read_manifest(real_folder)["name"].tolist() == names
    problems = check_folder(real_folder)
    assert any("says" in p.message and "999" in p.message for p in problems)


def test_prepare_output_refuses_other_data(tmp_path: Path):
    out = prepare_output(tmp_path / "o", "synth", {"seed": 1})
    write_image(out / "images" / "a.png", np.zeros((4, 4), np.uint8))
    assert prepare_output(out, "synth", {"seed": 1}) == out  # same settings: resume, keep files
    assert (out / "images" / "a.png").exists()
    with pytest.raises(DataError, match="other settings; choose another --out or pass --overwrite"):
        prepare_output(out, "synth", {"seed": 2})
    assert (out / "images" / "a.png").exists()  # nothing lost by the refusal
    prepare_output(out, "synth", {"seed": 2}, overwrite=True)
    assert not (out / "images" / "a.png").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.docx").write_text("precious")
    with pytest.raises(DataError, match="files that instlib did not write"):
        prepare_output(tmp_path / "mine", "synth", {})


def test_read_only_location_is_reported():
    with pytest.raises(DataError, match="not writable|cannot be written"):
        prepare_output("/sys/instlib-test-out", "synth", {})
