"""The one table reader: text as written, numbers and flags only where named, clear errors otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from instlib.data.folder import check_folder, read_manifest, write_manifest
from instlib.data.tables import read_rows, read_table
from instlib.errors import DataError


def _csv(path: Path, text: str) -> Path:
    path.write_bytes(text.encode("utf-8"))
    return path


def test_cells_are_text_exactly_as_written_unless_named(tmp_path):
    table = _csv(tmp_path / "t.csv", "\ufeffname,count,score,adain,note\n"
                                     "01,007,1e3,True,NA\n"
                                     "nan,3, 2.5 ,false,\n"
                                     "True,,,FALSE,None\n")
    df = read_table(table, numbers=("count", "score"), flags=("adain",))
    assert df["name"].tolist() == ["01", "nan", "True"] and df["note"].tolist() == ["NA", "", "None"]
    assert df["count"].tolist()[:2] == [7, 3] and df["count"].isna().tolist() == [False, False, True]
    assert df["score"].tolist()[:2] == [1000.0, 2.5] and df["adain"].tolist() == [True, False, False]
    text = read_table(table)
    assert text.to_numpy().tolist()[0] == ["01", "007", "1e3", "True", "NA"]
    assert read_table(table, numbers=lambda c: c == "count")["score"].tolist() == ["1e3", " 2.5 ", ""]


def test_short_rows_are_filled_and_blank_lines_skipped(tmp_path):
    df = read_table(_csv(tmp_path / "t.csv", "name,origin,style\n\n0x1F,1;01\n\"a,b\",,x\n"))
    assert df.to_numpy().tolist() == [["0x1F", "1;01", ""], ["a,b", "", "x"]]
    assert read_rows(tmp_path / "t.csv") == [["name", "origin", "style"], ["0x1F", "1;01"], ["a,b", "", "x"]]


@pytest.mark.parametrize("text, problem", [
    ("", "is empty; expected a header line"),
    ("name,name\na,b\n", "names the column 'name' more than once"),
    ("name,count\na,1,2\n", "row 1 has 3 cells, but the header names 2 columns"),
    ("name,count\na,1\nb,two\n", "row 2, column 'count': 'two' is not a number"),
    ("name,count\na,nan\n", "row 1, column 'count': 'nan' is not a number"),
    ("name,adain\na,yes\n", "row 1, column 'adain': 'yes' is not True or False"),
])
def test_what_does_not_convert_is_an_error_naming_the_file(tmp_path, text, problem):
    path = _csv(tmp_path / "t.csv", text)
    with pytest.raises(DataError, match=problem) as info:
        read_table(path, numbers=("count",), flags=("adain",))
    assert info.value.path == path


def test_undecodable_bytes_are_an_error_naming_the_file(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"name\n\xff\xfe\n")
    with pytest.raises(DataError, match="cannot be read as CSV") as info:
        read_rows(path)
    assert info.value.path == path


def test_a_manifest_keeps_its_names_and_says_which_row_lacks_a_count(real_folder: Path):
    names = ["01", "1", "1e3"]
    for old, new in zip(sorted(p.stem for p in (real_folder / "images").iterdir()), names):
        (real_folder / "images" / f"{old}.jpg").rename(real_folder / "images" / f"{new}.jpg")
        (real_folder / "points" / f"{old}.csv").rename(real_folder / "points" / f"{new}.csv")
    write_manifest(real_folder, [{"name": n, "count": 0, "origin": n} for n in names])
    manifest = read_manifest(real_folder)
    assert manifest["name"].tolist() == names and manifest["origin"].tolist() == names
    problems = [p.message for p in check_folder(real_folder)]
    assert len(problems) == 2 and all(m.startswith("says '1") for m in problems)  # 01 has 0 cells; 1 and 1e3 not
    write_manifest(real_folder, [{"name": "01", "count": ""}, {"name": "1", "count": 3}])
    assert [p.message for p in check_folder(real_folder)] == ["gives no count for '01'"]
