"""IDCIA as its authors ship it: stain folders, ImageJ CSVs, official split lists, OS clutter."""

import hashlib
from pathlib import Path

import numpy as np
import pytest

from instlib.data.fetch import import_folder
from instlib.data.folder import check_folder, list_samples, read_manifest
from instlib.data.selection import ImageFilter
from instlib.data.subsets import split_names
from instlib.errors import DataError

from cli_runner import run_cli as run
from idcia_layout import IMAGES, LISTS, make_idcia


def test_idcia_as_shipped_imports_completely(capsys, tmp_path: Path):
    src, dest = tmp_path / "IDCIA", tmp_path / "idcia"
    truth = make_idcia(src)
    code, out, err = run(capsys, "data", "import", src, "--dest", dest, "--source", "idcia")
    assert code == 0, err

    samples = list_samples(dest)
    assert sorted(s.name for s in samples) == sorted(IMAGES)
    for s in samples:  # every point, in pixels, unchanged
        np.testing.assert_allclose(s.load()[1], truth[s.name])
        assert s.image.read_bytes() == (src / "images" / IMAGES[s.name][0] / f"{s.name}.tiff").read_bytes()
    manifest = read_manifest(dest).set_index("name")
    assert manifest["split"].to_dict() == {n: split for n, (_, split, _) in IMAGES.items()}
    assert manifest["stain"].to_dict() == {n: stain for n, (stain, _, _) in IMAGES.items()}
    assert manifest["count"].to_dict() == {n: len(p) for n, p in truth.items()}
    assert split_names(dest) == {s: {n for n, (_, sp, _) in IMAGES.items() if sp == s} for s in LISTS}
    names = [s.name for s in samples]
    assert ImageFilter.of(stain="dapi").select(dest, names) == sorted(
        n for n, (stain, _, _) in IMAGES.items() if stain == "DAPI")
    assert ImageFilter.of(stain="Cy3", names="*_F2_*").select(dest, names) == ["220812_GFP-AHPC_A_TuJ1_F2_Cy3_ND1_20x"]

    # the printed table is the file's, and it is sha256sum's format over every file read
    table = (dest / "checksums.sha256").read_text()
    assert table in out
    lines = dict(reversed(line.split("  ", 1)) for line in table.splitlines())
    assert set(lines) == ({f"images/{st}/{n}.tiff" for n, (st, _, _) in IMAGES.items()}
                          | {f"ground_truth/{st}/{n}.csv" for n, (st, _, _) in IMAGES.items()} | set(LISTS.values()))
    for rel, digest in lines.items():
        assert hashlib.sha256((src / rel).read_bytes()).hexdigest() == digest

    code, out, err = run(capsys, "data", "check", dest)
    assert code == 0 and f"OK ({len(IMAGES)} images)" in out and not err


def test_pinned_checksums_refuse_a_changed_source(capsys, tmp_path: Path):
    src = tmp_path / "IDCIA"
    make_idcia(src)
    first = import_folder(src, tmp_path / "a", progress=False)
    pin = tmp_path / "idcia.sha256"
    pin.write_text((first / "checksums.sha256").read_text())
    assert run(capsys, "data", "import", src, "--dest", tmp_path / "b", "--pin", pin)[0] == 0

    changed = src / "ground_truth" / "Cy3" / "220812_GFP-AHPC_A_TuJ1_F1_Cy3_ND1_20x.csv"
    changed.write_text(changed.read_text() + "99,0,1,1,1,3,4\n")
    code, out, err = run(capsys, "data", "import", src, "--dest", tmp_path / "c", "--pin", pin)
    assert code == 2 and err.startswith(f"error: {changed}: has SHA-256 ")
    assert not (tmp_path / "c").exists()


def test_a_partial_copy_keeps_the_split_of_what_is_there(tmp_path: Path):
    src = tmp_path / "IDCIA"
    make_idcia(src)
    for name, (stain, _, _) in IMAGES.items():  # the user copied the DAPI images only
        if stain == "Cy3":
            (src / "images" / stain / f"{name}.tiff").unlink()
            (src / "ground_truth" / stain / f"{name}.csv").unlink()
    manifest = read_manifest(import_folder(src, tmp_path / "dapi", progress=False)).set_index("name")
    assert manifest["split"].to_dict() == {n: sp for n, (st, sp, _) in IMAGES.items() if st == "DAPI"}


def test_flat_layout_takes_the_stain_from_the_name_and_has_no_split(tmp_path: Path):
    src = tmp_path / "flat"
    make_idcia(tmp_path / "shipped")
    for p in (tmp_path / "shipped").rglob("*.tiff"):
        if "__MACOSX" not in p.parts:
            (src / "imgs").mkdir(parents=True, exist_ok=True)
            (src / "imgs" / p.name).write_bytes(p.read_bytes())
    for p in (tmp_path / "shipped" / "ground_truth").rglob("*.csv"):
        (src / "csv").mkdir(exist_ok=True)
        (src / "csv" / p.name).write_bytes(p.read_bytes())
    dest = import_folder(src, tmp_path / "out", progress=False)
    manifest = read_manifest(dest).set_index("name")
    assert "split" not in manifest.columns
    assert manifest["stain"].to_dict() == {n: st for n, (st, _, _) in IMAGES.items()}
    with pytest.raises(DataError, match="has no official split"):
        split_names(dest)


def test_an_image_in_two_split_lists_is_refused(tmp_path: Path):
    src = tmp_path / "IDCIA"
    make_idcia(src)
    with (src / "test.csv").open("a") as fh:
        fh.write('"220812_GFP-AHPC_A_TuJ1_F1_DAPI_ND1_20x.tiff"\n')
    with pytest.raises(DataError, match=r"lists '220812_GFP-AHPC_A_TuJ1_F1_DAPI_ND1_20x' as (train|test), but (test|train).csv lists it as"):
        import_folder(src, tmp_path / "out", progress=False)


def test_os_junk_is_ignored_by_check_with_a_note(capsys, real_folder: Path):
    (real_folder / "images" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (real_folder / "images" / "desktop.ini").write_text("[x]\n")
    (real_folder / "points" / "._220909_GFP-AHPC_A_F0.csv").write_bytes(b"\x00\x05")
    assert check_folder(real_folder) == []
    code, out, err = run(capsys, "data", "check", real_folder)
    assert code == 0 and "OK (3 images)" in out
    assert "note: ignored 3 hidden or system file(s)" in out


def test_split_lists_with_a_header_line_and_commands_on_the_raw_layout(capsys, tmp_path: Path):
    src = tmp_path / "IDCIA"
    make_idcia(src)
    for file in LISTS.values():
        (src / file).write_text("filename\n" + (src / file).read_text())
    manifest = read_manifest(import_folder(src, tmp_path / "out", progress=False)).set_index("name")
    assert manifest["split"].to_dict() == {n: split for n, (_, split, _) in IMAGES.items()}
    # a folder-format command given the shipped layout points to the importer
    code, out, err = run(capsys, "synth", "--out", tmp_path / "syn", "--from-points", src)
    assert code == 2 and err.startswith(f"error: {src / 'images' / 'Cy3'}: is a folder") and "data import" in err


def test_a_subset_keeps_the_official_split_and_the_stains(tmp_path: Path):
    from instlib.runs.notebook import subset

    src = tmp_path / "IDCIA"
    make_idcia(src)
    full = import_folder(src, tmp_path / "full", progress=False)
    part = read_manifest(subset(full, tmp_path / "part", 3)).set_index("name")
    assert len(part) == 3 and part["split"].to_dict() == {n: IMAGES[n][1] for n in part.index}
    assert part["stain"].to_dict() == {n: IMAGES[n][0] for n in part.index}


def test_synhc_drawn_from_one_stain_only(capsys, tmp_path: Path):
    """The authors drew Syn-HC from DAPI images only; --stain / --names select what is drawn."""
    src, dest = tmp_path / "IDCIA", tmp_path / "idcia"
    truth = make_idcia(src)
    import_folder(src, dest, progress=False)
    dapi = sorted(n for n, (stain, _, _) in IMAGES.items() if stain == "DAPI")

    code, _, err = run(capsys, "synth", "--from-points", dest, "--out", tmp_path / "syn", "--stain", "dapi",
                       "--cell-size", "auto")
    assert code == 0, err
    manifest = read_manifest(tmp_path / "syn")
    assert sorted(manifest["name"]) == dapi and sorted(manifest["origin"]) == dapi
    assert manifest["count"].tolist() == [len(truth[n]) for n in manifest["name"]]

    code, _, err = run(capsys, "synth", "--from-points", dest, "--out", tmp_path / "f2", "--names", "*_F2_*")
    assert code == 0, err
    assert sorted(read_manifest(tmp_path / "f2")["name"]) == sorted(n for n in IMAGES if "_F2_" in n)

    code, _, err = run(capsys, "synth", "--from-points", dest, "--out", tmp_path / "none", "--stain", "GFAP")
    assert code == 2 and f"error: {dest}" in err and "no images left" in err
    assert not (tmp_path / "none").exists()
    code, _, err = run(capsys, "synth", "--n", "2", "--size", "20", "20", "--cells", "1", "3", "--out",
                       tmp_path / "random", "--stain", "DAPI")
    assert code == 2 and "--from-points" in err and not (tmp_path / "random").exists()
