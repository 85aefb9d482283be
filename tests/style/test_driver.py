"""transfer_folder: pairing, the folder format it writes, resume, shards, and input errors."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

import instlib.style.driver as driver
from instlib.config import TransferConfig
from instlib.data.folder import read_manifest
from instlib.data.images import read_image, write_image
from instlib.data.points import write_points
from instlib.data.selection import ImageFilter
from instlib.errors import DataError, InstlibError
from instlib.style import image_seed, transfer_folder
from instlib.style.tokens import new_token, save_token
from style_helpers import RES

FAST = dict(steps=10, strength=0.5, resolution=RES)


def test_writes_the_folder_format(tiny, folders, token_file, tmp_path):
    out = transfer_folder(folders["synhc"], folders["real"], token_file, tmp_path / "out", tiny, TransferConfig(**FAST),
                          batch_size=3)
    manifest = read_manifest(out)
    assert list(manifest["name"]) == ["field0", "field1", "field2", "field3"]
    for row in manifest.itertuples():
        content = folders["synhc"] / "images" / f"{row.name}.png"
        styled = read_image(out / "images" / f"{row.name}.png")
        assert styled.shape[:2] == read_image(content).shape[:2] == (48, 64)  # back at the content's size
        assert (out / "points" / f"{row.name}.csv").read_bytes() == \
            (folders["synhc"] / "points" / f"{row.name}.csv").read_bytes()
        assert row.style == row.name and row.style_image.endswith(f"real/images/{row.name}.png")
        assert row.origin == row.name  # the real image of its points and of its style (one here)
        assert row.seed == image_seed(42, row.name)
        assert 0.0 <= row.fidelity_recall <= 1.0 and row.fidelity_spurious >= 0 and row.content_recall > 0.5
    assert {"count", "source", "strength", "steps", "guidance", "adain", "inversion", "reference_timesteps",
            "model", "fidelity_recall", "fidelity_spurious", "base_seed"} <= set(manifest.columns)
    assert set(manifest["model"]) == {"tiny"} and set(manifest["inversion"]) == {"stochastic"}


def test_same_images_whatever_the_batch_size(tiny, folders, token_file, tmp_path):
    a = transfer_folder(folders["synhc"], folders["real"], token_file, tmp_path / "a", tiny, TransferConfig(**FAST),
                        batch_size=1)
    b = transfer_folder(folders["synhc"], folders["real"], token_file, tmp_path / "b", tiny, TransferConfig(**FAST),
                        batch_size=4)
    for name in read_manifest(a)["name"]:
        x, y = (read_image(d / "images" / f"{name}.png") for d in (a, b))
        assert np.abs(x - y).max() <= 1 / 255 + 1e-6


def test_killed_run_resumes_without_redoing(tiny, folders, token_file, tmp_path, monkeypatch):
    reference = transfer_folder(folders["synhc"], folders["real"], token_file, tmp_path / "ref", tiny, TransferConfig(**FAST),
                                batch_size=2)
    real_stylize, calls = driver.stylize_images, []

    def dying(*args, **kwargs):
        calls.append(len(args[2]))
        if len(calls) == 2:
            raise KeyboardInterrupt  # killed during the second batch
        return real_stylize(*args, **kwargs)

    monkeypatch.setattr(driver, "stylize_images", dying)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        transfer_folder(folders["synhc"], folders["real"], token_file, out, tiny, TransferConfig(**FAST), batch_size=2)
    assert list(read_manifest(out)["name"]) == ["field0", "field1"]
    first = (out / "images" / "field0.png").read_bytes()
    calls.clear()
    monkeypatch.setattr(driver, "stylize_images", lambda *a, **k: calls.append(len(a[2])) or real_stylize(*a, **k))
    transfer_folder(folders["synhc"], folders["real"], token_file, out, tiny, TransferConfig(**FAST), batch_size=2)
    assert calls == [2]  # only the unfinished batch was redone
    assert (out / "images" / "field0.png").read_bytes() == first
    pd.testing.assert_frame_equal(read_manifest(out), read_manifest(reference))
    for name in read_manifest(out)["name"]:
        assert (out / "images" / f"{name}.png").read_bytes() == (reference / "images" / f"{name}.png").read_bytes()


def test_shards_split_the_work(tiny, folders, token_file, tmp_path):
    out = tmp_path / "out"
    for i in range(2):
        transfer_folder(folders["synhc"], folders["real"], token_file, out, tiny, TransferConfig(**FAST), shard=(i, 2))
    assert sorted(p.name for p in out.glob("manifest*.csv")) == ["manifest.shard-0-of-2.csv",
                                                                 "manifest.shard-1-of-2.csv"]
    assert list(read_manifest(out)["name"]) == ["field0", "field1", "field2", "field3"]


def test_other_settings_need_overwrite(tiny, folders, token_file, tmp_path):
    out = transfer_folder(folders["synhc"], folders["real"], token_file, tmp_path / "out", tiny, TransferConfig(**FAST))
    with pytest.raises(DataError, match="--overwrite"):
        transfer_folder(folders["synhc"], folders["real"], token_file, out, tiny, TransferConfig(**{**FAST, "strength": 0.8}))
    transfer_folder(folders["synhc"], folders["real"], token_file, out, tiny, TransferConfig(**{**FAST, "strength": 0.8}),
                    overwrite=True)
    assert set(read_manifest(out)["strength"]) == {0.8}


def test_one_style_image_for_all_and_manifest_pairing(tiny, folders, token_file, tmp_path):
    one = folders["real"] / "images" / "field2.png"
    out = transfer_folder(folders["synhc"], one, token_file, tmp_path / "one", tiny, TransferConfig(**FAST))
    assert set(read_manifest(out)["style_image"]) == {str(one)}
    # a gradual Syn-HC series names its real pair in the manifest's style column
    content = tmp_path / "gradual"
    shutil.copytree(folders["synhc"], content)
    for p in list((content / "images").iterdir()):
        p.rename(p.with_name(p.stem + "_g00.png"))
        (content / "points" / f"{p.stem}.csv").rename(content / "points" / f"{p.stem}_g00.csv")
    manifest = pd.read_csv(content / "manifest.csv")
    manifest["style"], manifest["name"] = manifest["name"], manifest["name"] + "_g00"
    manifest.to_csv(content / "manifest.csv", index=False)
    out = transfer_folder(content, folders["real"], token_file, tmp_path / "g", tiny, TransferConfig(**FAST))
    assert list(read_manifest(out)["style"]) == ["field0", "field1", "field2", "field3"]


def test_category_tokens_follow_the_count(tiny, folders, tmp_path):
    tokens = tmp_path / "tokens"
    for lo, hi, seed in ((0, 10, 1), (11, 100, 2)):
        save_token(new_token(tiny.hidden_size, base_model="tiny", category=(lo, hi), seed=seed),
                   tokens / f"token-{lo}-{hi}.safetensors")
    out = transfer_folder(folders["synhc"], folders["real"], tokens, tmp_path / "out", tiny, TransferConfig(**FAST))
    manifest = read_manifest(out)
    assert list(manifest["category"]) == ["0-10", "0-10", "11-100", "11-100"]  # counts 3, 8, 14, 20
    (tokens / "token-11-100.safetensors").unlink()
    save_token(new_token(tiny.hidden_size, base_model="tiny", category=(17, 30), seed=2),
               tokens / "token-17-30.safetensors")
    out = transfer_folder(folders["synhc"], folders["real"], tokens, tmp_path / "out2", tiny, TransferConfig(**FAST))
    assert list(read_manifest(out)["category"]) == ["0-10", "0-10", "17-30", "17-30"]  # 14 is nearest to 17


def test_input_errors_name_the_file_and_write_nothing(tiny, folders, token_file, tmp_path):
    style = tmp_path / "style"
    shutil.copytree(folders["real"], style)
    (style / "images" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match="is not an image file") as err:
        transfer_folder(folders["synhc"], style, token_file, tmp_path / "o1", tiny, TransferConfig(**FAST))
    assert err.value.path.name == "notes.txt"
    (style / "images" / "notes.txt").unlink()
    (style / "images" / "field1.png").unlink()
    with pytest.raises(DataError, match="no style image for 1 of 4 content images.*field1"):
        transfer_folder(folders["synhc"], style, token_file, tmp_path / "o2", tiny, TransferConfig(**FAST))
    bad_token = tmp_path / "bad.safetensors"
    bad_token.write_bytes(b"not a token")
    with pytest.raises(DataError, match="not a readable safetensors") as err:
        transfer_folder(folders["synhc"], folders["real"], bad_token, tmp_path / "o3", tiny, TransferConfig(**FAST))
    assert err.value.path == bad_token
    content = tmp_path / "content"
    shutil.copytree(folders["synhc"], content)
    write_image(content / "images" / "field0.png", np.zeros((20, 20), np.uint8))  # smaller than its points
    write_points(content / "points" / "field0.csv", np.array([[30.0, 30.0]]))
    with pytest.raises(DataError, match="outside the 20x20 image"):
        transfer_folder(content, folders["real"], token_file, tmp_path / "o4", tiny, TransferConfig(**FAST))
    with pytest.raises(InstlibError, match="does not fit"):
        wide = save_token(new_token(768), tmp_path / "wide.safetensors")
        transfer_folder(folders["synhc"], folders["real"], wide, tmp_path / "o5", tiny, TransferConfig(**FAST))
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))


def test_stain_filter_keeps_content_paired_with_that_stain(tiny, folders, token_file, tmp_path):
    style = tmp_path / "real"
    shutil.copytree(folders["real"], style)
    pd.DataFrame({"name": [f"field{i}" for i in range(4)], "count": [3, 8, 14, 20],
                  "stain": ["DAPI", "Cy3", "DAPI", "Cy3"]}).to_csv(style / "manifest.csv", index=False)
    out = transfer_folder(folders["synhc"], style, token_file, tmp_path / "dapi", tiny, TransferConfig(**FAST),
                          select=ImageFilter.of(stain="DAPI"))
    manifest = read_manifest(out)
    assert list(manifest["name"]) == ["field0", "field2"] and set(manifest["tiling"]) == {"blend"}
    out = transfer_folder(folders["synhc"], style, token_file, tmp_path / "glob", tiny, TransferConfig(tiling="grid", **FAST),
                          select=ImageFilter.of(names="field[01]"))
    manifest = read_manifest(out)
    assert list(manifest["name"]) == ["field0", "field1"] and set(manifest["tiling"]) == {"grid"}


def test_token_controls_none_and_another(tiny, folders, token_file, tmp_path):
    """condition none: the empty prompt, whatever the token would see; another: each token sees the next image's
    style image (recorded, and counted in the origin), which changes the result."""
    from instlib.style import load_token, stylize_images
    from instlib.style.imaging import load_rgb

    def run(name, **changes):
        return transfer_folder(folders["synhc"], folders["real"], token_file, tmp_path / name, tiny,
                               TransferConfig(**FAST, **changes), batch_size=2, progress=False)

    own, none, another = run("own"), run("none", condition="none"), run("another", condition="another")
    names = list(read_manifest(own)["name"])
    images = {d: {n: read_image(d / "images" / f"{n}.png") for n in names} for d in (own, none, another)}
    assert all(not np.array_equal(images[own][n], images[none][n]) for n in names)
    assert all(not np.array_equal(images[own][n], images[another][n]) for n in names)
    rows = read_manifest(another).set_index("name")
    for i, n in enumerate(names):
        nxt = names[(i + 1) % len(names)]
        assert rows.loc[n, "token_style"] == nxt and rows.loc[n, "condition"] == "another"
        assert set(rows.loc[n, "origin"].split(";")) == {n, nxt}
    assert list(read_manifest(own)["token_style"]) == names
    # under none the token's image is unused: any image gives the folder's result
    content, style = (load_rgb(folders[k] / "images" / "field1.png") for k in ("synhc", "real"))
    seed = int(rows.loc["field1", "seed"])
    other = stylize_images(tiny, load_token(token_file), [content], [style], TransferConfig(**FAST, condition="none"),
                           [seed], token_images=[np.zeros_like(style)])[0]
    assert np.abs(other.astype(int) - (images[none]["field1"] * 255).round()).max() <= 1  # batched rounding


def test_unknown_condition_is_refused():
    with pytest.raises(ValueError, match="condition"):
        TransferConfig(condition="shuffled")
