"""Image names are strings, whatever they look like: every stage keeps them, and no test image leaks.

Published sets name images ``01`` ... ``41``; others use names that CSV readers like to turn into
numbers, missing values or booleans (``007``, ``1e3``, ``0x1F``, ``NA``, ``nan``, ``None``, ``True``),
or names with spaces, dots, commas and non-ASCII letters. Hypothesis draws folders of such names
(families that differ only in leading zeros included) and sends them through the commands as a user
runs them: the cheap stages on many folders, style and counting on a few whose names all look like
numbers, the case where a guessing reader loses them (see the settings profiles in conftest.py).
Names, origins and counts must come back exactly, and the counting stages must leave out exactly the
synthetic images drawn from test images.
"""

from __future__ import annotations

import csv
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from instlib.count.inputs import without_leaks
from instlib.data.fetch import shipped_split
from instlib.data.folder import check_folder, list_samples, read_manifest, write_manifest
from instlib.data.images import write_image
from instlib.data.points import write_points
from instlib.data.provenance import origins
from instlib.data.selection import ImageFilter
from instlib.data.simulate import colorize, render_fluorescence
from instlib.data.splits import split_part
from instlib.data.subsets import SPLITS, split_names, stains_of
from instlib.data.synth import image_rng
from instlib.data.tables import read_table
from instlib.runs.notebook import subset
from instlib.runs.results import cv_predictions, protocol_table

from cli_runner import run_cli

# Names that type guessing turns into something else, and names with spaces, dots, commas, non-ASCII.
TRICKY = ("01", "1", "001", "007", "7", "1e3", "1E3", "1000", "0x1F", "31", "NA", "nan", "NaN", "None", "null",
          "True", "true", "FALSE", "-1", "+1", "1.0", "1.50", "inf", "2,5", "cell 01", "a b c", "a.b.c", "v1.2",
          "ünïcødé", "細胞 07", "ß.1")
# Families of names that differ only in leading zeros: 7, 07, 007, ...
ZEROS = st.builds(lambda zeros, n: "0" * zeros + str(n), st.integers(0, 3), st.integers(0, 12))
NUMBER_LIKE = st.one_of(ZEROS, st.sampled_from(["1e3", "1E3", "1.0", "1.50", "+1", "-1", "inf", "1000", "31"]))
MISSING_LIKE = ("NA", "nan", "NaN", "None", "null")
# A guessing reader guesses a column at a time, so a folder whose names all look like numbers (as
# 01 ... 41 do), or like numbers and missing values, loses its names where a mixed folder keeps them:
# such folders are drawn as often as mixed ones.
ANY_NAMES = st.one_of(
    st.lists(st.one_of(st.sampled_from(TRICKY), ZEROS), min_size=2, max_size=8, unique=True),
    st.lists(NUMBER_LIKE, min_size=2, max_size=8, unique=True),
    st.lists(st.one_of(NUMBER_LIKE, st.sampled_from(MISSING_LIKE)), min_size=2, max_size=8, unique=True),
)
# For the stages too slow for many folders: names that all look like numbers, a number and the same
# number with leading zeros among them.
NUMBER_NAMES = st.tuples(st.integers(0, 12).map(lambda n: [str(n), f"0{n}"]),
                         st.lists(NUMBER_LIKE, min_size=5, max_size=5, unique=True)
                         ).map(lambda parts: parts[0] + parts[1]).filter(lambda names: len(set(names)) == len(names))
LISTS = {"train": "train.csv", "val": "validation.csv", "test": "test.csv"}
STAINS = ("DAPI", "Cy3")
# Cheap stages get the profile's examples; style and counting a fifteenth of them (one in CI).
PIPELINE_EXAMPLES = max(1, settings().max_examples // 15)
REUSES_CAPSYS = [HealthCheck.function_scoped_fixture]  # capsys is read out after every command


@st.composite
def real_sets(draw, names=ANY_NAMES, splits=None, cells=(0, 12)):
    """``{name: (stain, split, count)}``; ``splits`` fixes how many images each split gets."""
    names = draw(names)
    n = len(names)
    if splits is None:
        parts = draw(st.lists(st.sampled_from(SPLITS), min_size=n, max_size=n))
    else:
        parts = draw(st.permutations([s for s, k in splits.items() for _ in range(k)]))
    stains = draw(st.lists(st.sampled_from(STAINS), min_size=n, max_size=n))
    counts = draw(st.lists(st.integers(*cells), min_size=n, max_size=n))
    return {name: (stain, part, count) for name, stain, part, count in zip(names, stains, parts, counts)}


def write_shipped(root: Path, images: dict, shape=(24, 32)) -> Path:
    """The layout a data set ships: ``images/<STAIN>/``, ``ground_truth/<STAIN>/``, quoted split lists."""
    for name, (stain, _, count) in images.items():
        img, pts = render_fluorescence(count, shape, image_rng(5, name))
        write_image(root / "images" / stain / f"{name}.png", colorize(img, "dapi"))
        write_points(root / "ground_truth" / stain / f"{name}.csv", pts[:count])
    for split, file in LISTS.items():
        # IDCIA's lists name some images with their suffix and some without
        entries = [[f"{n}.png" if i % 2 else n] for i, (n, (_, s, _)) in enumerate(images.items()) if s == split]
        if entries:
            with open(root / file, "w", newline="", encoding="utf-8") as fh:
                csv.writer(fh, quoting=csv.QUOTE_ALL).writerows(entries)
    return root


def cli(capsys, *args) -> str:
    """stdout of a command that must succeed."""
    code, out, err = run_cli(capsys, *args)
    assert code == 0, f"instlib {' '.join(map(str, args))}: exit {code}\n{err}"
    return out


@pytest.fixture
def one_thread():
    """Tiny models on a busy machine: OpenMP threads only add barrier costs (see tests/style/conftest.py)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def held_out(images: dict) -> set[str]:
    return {n for n, (_, split, _) in images.items() if split == "test"}


@given(images=real_sets())
@settings(suppress_health_check=REUSES_CAPSYS)
def test_names_round_trip_through_import_check_synth_and_the_subset_helpers(capsys, images):
    names = sorted(images)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        real = tmp / "real"
        cli(capsys, "data", "import", write_shipped(tmp / "src", images), "--dest", real)
        manifest = read_manifest(real)
        assert list(manifest["name"]) == names == [s.name for s in list_samples(real)]
        assert manifest["count"].tolist() == [images[n][2] for n in names]
        assert manifest["split"].tolist() == [images[n][1] for n in names]
        assert stains_of(real) == {n: images[n][0] for n in names}
        assert split_names(real) == {s: {n for n in names if images[n][1] == s} for s in SPLITS}
        assert shipped_split(real) == {n: images[n][1] for n in names}
        test = held_out(images)
        if test:
            assert [names[i] for i in split_part(real, names, "test")] == sorted(test)
        stain = images[names[0]][0]
        assert ImageFilter(stain=stain).select(real, names) == [n for n in names if images[n][0] == stain]
        assert f"OK ({len(names)} images)" in cli(capsys, "data", "check", real)

        part = read_manifest(subset(real, tmp / "part", 2)).set_index("name")
        assert len(part) == 2 and all(part.loc[n, "split"] == images[n][1] and part.loc[n, "stain"] == images[n][0]
                                      for n in part.index)

        # the manifest's counts are checked name by name, and a manifest written back reads back the same
        edited = Path(shutil.copytree(real, tmp / "edited"))
        first = names[0]
        manifest.loc[0, "count"] += 1
        write_manifest(edited, manifest)
        assert read_manifest(edited).equals(manifest)
        code, out, _ = run_cli(capsys, "data", "check", edited)
        assert code == 1 and f"says '{first}' has {images[first][2] + 1} cells; its points file has " \
                              f"{images[first][2]}" in out and out.count("says '") == 1

        syn = tmp / "syn"
        cli(capsys, "synth", "--out", syn, "--from-points", real, "--cell-size", 4)
        drawn = read_manifest(syn)
        assert list(drawn["name"]) == names and list(drawn["origin"]) == names and list(drawn["style"]) == names
        assert drawn["count"].tolist() == [images[n][2] for n in names]
        assert origins(syn) == {n: frozenset({n}) for n in names} and check_folder(syn) == []
        kept, excluded = without_leaks(list_samples(syn), sorted(test))
        assert excluded == len(test) and [s.name for s in kept] == [n for n in names if n not in test]

        cli(capsys, "synth", "--out", tmp / "one-stain", "--from-points", real, "--cell-size", 4, "--stain", stain)
        assert list(read_manifest(tmp / "one-stain")["origin"]) == [n for n in names if images[n][0] == stain]


# Every image has cells: the density targets' width is measured at them. No shrinking: one run of the
# pipeline takes seconds, and the failing folder as drawn says enough.
@given(images=real_sets(NUMBER_NAMES, splits={"train": 4, "val": 1, "test": 2}, cells=(1, 12)))
@settings(max_examples=PIPELINE_EXAMPLES, suppress_health_check=REUSES_CAPSYS,
          phases=[Phase.explicit, Phase.reuse, Phase.generate])
def test_style_and_counting_keep_the_names_and_leave_out_exactly_the_images_drawn_from_test_images(capsys, one_thread,
                                                                                                   images):
    names, test = sorted(images), held_out(images)
    tiny = ("--model", "tiny", "--resolution", 32, "--device", "cpu")
    counting = ("--model", "test_efficientnet", "--no-pretrained", "--epochs", 1, "--finetune-epochs", 1,
                "--max-steps", 1, "--crop-size", 32, "--device", "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        real, syn, inst, token = tmp / "real", tmp / "syn", tmp / "inst", tmp / "tok.safetensors"
        cli(capsys, "data", "import", write_shipped(tmp / "src", images, shape=(48, 64)), "--dest", real)
        cli(capsys, "synth", "--out", syn, "--from-points", real, "--cell-size", 8)
        cli(capsys, "style", "train", "--style", real, "--out", token, "--steps", 1, *tiny)
        # each Syn-HC image is styled after the real image its manifest's 'style' column names
        transfer = ("style", "transfer", "--content", syn, "--style", real, "--token", token, "--out", inst,
                    "--steps", 2, *tiny)
        cli(capsys, *transfer)
        styled = read_manifest(inst)
        assert list(styled["name"]) == names and list(styled["style"]) == names and list(styled["origin"]) == names
        assert styled["count"].tolist() == [images[n][2] for n in names] and check_folder(inst) == []
        written = {p: p.stat().st_mtime_ns for p in (inst / "images").iterdir()}
        cli(capsys, *transfer)  # a rerun finds every image listed as finished and styles none again
        assert {p: p.stat().st_mtime_ns for p in (inst / "images").iterdir()} == written
        assert read_manifest(inst).equals(styled)

        cli(capsys, "style", "realism", "--real", real, "--fake", inst, "--out", tmp / "r.csv", "--folds", 2,
            "--crop", 32)
        realism = read_table(tmp / "r.csv", numbers=("accuracy", "std", "folds", "images"))
        assert realism["fake"].tolist() == [str(inst)] and realism["images"].tolist() == [len(names)]

        out = cli(capsys, "count", "train", "--train", inst, "--finetune", real, "--test", real, "--out", tmp / "run",
                  "--split", "official", *counting)
        assert f"; {len(test)} training images drawn from test images left out" in out
        predicted = read_table(tmp / "run" / "predictions.csv", numbers=("true", "pred", "true_center", "pred_center"))
        assert sorted(predicted["name"]) == sorted(test)
        assert predicted["true"].tolist() == [images[n][2] for n in predicted["name"]]

        cv = tmp / "cv"  # six images are too few for stratified folds with a validation share: the official split
        cli(capsys, "count", "cv", "--real", real, "--out", cv, "--split", "official", "--pretrain-on", f"synhc={syn}",
            *counting)
        runs = protocol_table(cv).set_index("source")
        assert runs["excluded"].to_dict() == {"real": 0, "Syn-HC": len(test)}
        tested = cv_predictions(cv)
        # the test images, under their own names, in both runs
        assert sorted(tested["name"]) == sorted(2 * sorted(test))
        assert tested["true"].tolist() == [images[n][2] for n in tested["name"]]
