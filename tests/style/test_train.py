"""Style-token training: only the block learns, the loss log, checkpoints and resume, categories."""

from __future__ import annotations

import hashlib
import shutil

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

import instlib.style.train as train
from instlib.config import TokenTrainingConfig
from instlib.data.images import write_image
from instlib.data.selection import ImageFilter
from instlib.errors import DataError, InstlibError
from instlib.style import load_token, train_category_tokens, train_style_token
from instlib.style.tokens import new_token
from style_helpers import RES

FAST = dict(resolution=RES, checkpoint_every=2)


def _frozen_digest(components) -> str:
    h = hashlib.sha256()
    for net in (components.unet, components.vae, components.text_encoder, components.image_encoder):
        for value in net.state_dict().values():
            h.update(value.numpy().tobytes())
    return h.hexdigest()


def _same_tokens(a, b) -> bool:
    sa, sb = load_token(a).block.state_dict(), load_token(b).block.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def test_trains_only_the_block_and_logs_the_loss(tiny, folders, tmp_path):
    before = _frozen_digest(tiny)
    out = train_style_token(folders["real"], tmp_path / "tok.safetensors", tiny, TokenTrainingConfig(steps=3, lr=1e-3, **FAST))
    assert _frozen_digest(tiny) == before
    assert all(not p.requires_grad for p in tiny.unet.parameters())
    token = load_token(out)
    init = new_token(tiny.hidden_size, seed=0).block.state_dict()
    assert any(not torch.equal(v, init[k]) for k, v in token.block.state_dict().items())
    assert token.base_model == "tiny" and token.info["steps"] == 3 and token.info["images"] == 4
    log = (tmp_path / "tok.loss.csv").read_text().splitlines()
    assert log[0] == "step,loss" and [int(r.split(",")[0]) for r in log[1:]] == [1, 2, 3]
    assert all(float(r.split(",")[1]) > 0 for r in log[1:])
    assert (tmp_path / "tok.ckpt.safetensors").is_file()


def test_killed_run_resumes_to_the_same_token(tiny, folders, tmp_path, monkeypatch):
    straight = train_style_token(folders["real"], tmp_path / "a.safetensors", tiny, TokenTrainingConfig(steps=4, **FAST))
    real_loss, calls = train._loss, []

    def dying(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt  # killed in step 4, after the checkpoint at step 2
        return real_loss(*args, **kwargs)

    monkeypatch.setattr(train, "_loss", dying)
    with pytest.raises(KeyboardInterrupt):
        train_style_token(folders["real"], tmp_path / "b.safetensors", tiny, TokenTrainingConfig(steps=4, **FAST))
    assert not (tmp_path / "b.safetensors").exists()
    calls.clear()
    monkeypatch.setattr(train, "_loss", lambda *a, **k: calls.append(1) or real_loss(*a, **k))
    resumed = train_style_token(folders["real"], tmp_path / "b.safetensors", tiny, TokenTrainingConfig(steps=4, **FAST))
    assert len(calls) == 2  # steps 3 and 4 only
    assert _same_tokens(straight, resumed)
    assert (tmp_path / "a.loss.csv").read_text() == (tmp_path / "b.loss.csv").read_text()


def test_more_steps_continue_a_finished_training(tiny, folders, tmp_path):
    straight = train_style_token(folders["real"], tmp_path / "a.safetensors", tiny, TokenTrainingConfig(steps=4, **FAST))
    out = tmp_path / "b.safetensors"
    train_style_token(folders["real"], out, tiny, TokenTrainingConfig(steps=2, **FAST))
    assert train_style_token(folders["real"], out, tiny, TokenTrainingConfig(steps=2, **FAST)) == out  # already done: nothing to do
    train_style_token(folders["real"], out, tiny, TokenTrainingConfig(steps=4, **FAST))
    assert _same_tokens(straight, out)
    with pytest.raises(InstlibError, match="more than the 3"):
        train_style_token(folders["real"], out, tiny, TokenTrainingConfig(steps=3, **FAST))


def test_other_settings_are_not_resumed(tiny, folders, tmp_path):
    out = train_style_token(folders["real"], tmp_path / "t.safetensors", tiny, TokenTrainingConfig(steps=2, **FAST))
    with pytest.raises(InstlibError, match="other settings \\(lr\\)"):
        train_style_token(folders["real"], out, tiny, TokenTrainingConfig(steps=4, lr=1e-3, **FAST))
    train_style_token(folders["real"], out, tiny, TokenTrainingConfig(steps=2, lr=1e-3, **FAST), overwrite=True)
    assert load_token(out).info["lr"] == 1e-3


def test_category_tokens(tiny, folders, tmp_path):
    paths = train_category_tokens(folders["real"], tmp_path / "tokens", tiny, [(0, 10), (11, 30)], TokenTrainingConfig(steps=1, **FAST))
    assert [p.name for p in paths] == ["token-0-10.safetensors", "token-11-30.safetensors"]
    assert [load_token(p).category for p in paths] == [(0, 10), (11, 30)]
    assert [load_token(p).info["images"] for p in paths] == [2, 2]  # counts 3, 8 | 14, 20
    with pytest.raises(DataError, match="no style images with 50 to 60 cells"):
        train_style_token(folders["real"], tmp_path / "x.safetensors", tiny, TokenTrainingConfig(steps=1, **FAST),
                          category=(50, 60))
    with pytest.raises(DataError, match="cannot be split by cell count"):
        train_style_token(folders["real"] / "images", tmp_path / "y.safetensors", tiny, TokenTrainingConfig(steps=1, **FAST),
                          category=(0, 9))


def test_bad_style_folder(tiny, tmp_path):
    (tmp_path / "style").mkdir()
    (tmp_path / "style" / "a.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="cannot be decoded") as err:
        train_style_token(tmp_path / "style", tmp_path / "t.safetensors", tiny, TokenTrainingConfig(steps=1, **FAST))
    assert err.value.path.name == "a.png"
    assert not (tmp_path / "t.safetensors").exists()


def _training_images(tiny, style_dir, tmp_path, monkeypatch, **kwargs):
    seen = []
    real_loss = train._loss
    monkeypatch.setattr(train, "_loss", lambda c, b, images, *a: seen.append(images) or real_loss(c, b, images, *a))
    out = train_style_token(style_dir, tmp_path / f"t{len(list(tmp_path.iterdir()))}.safetensors", tiny,
                            TokenTrainingConfig(steps=1, **FAST, **kwargs))
    return seen[0], load_token(out)


def test_training_resizes_the_whole_image_as_the_reference(tiny, tmp_path, monkeypatch):
    wide = np.zeros((RES, 2 * RES, 3), np.uint8)
    wide[:, :RES // 2] = 255  # bright left quarter: a centre crop would drop it
    style = tmp_path / "style"
    write_image(style / "images" / "wide.png", wide)
    images, token = _training_images(tiny, style, tmp_path, monkeypatch)
    assert np.array_equal(images[0], np.array(Image.fromarray(wide).resize((RES, RES), Image.Resampling.BICUBIC)))
    assert images[0][:, :RES // 8].mean() > 200 and token.info["geometry"] == "resize"
    cropped, token = _training_images(tiny, style, tmp_path, monkeypatch, geometry="center-crop")
    assert np.array_equal(cropped[0], wide[:, RES // 2:RES // 2 + RES]) and token.info["geometry"] == "center-crop"
    with pytest.raises(InstlibError, match="unknown geometry 'squash'"):
        train_style_token(style, tmp_path / "x.safetensors", tiny, TokenTrainingConfig(steps=1, geometry="squash", **FAST))


def test_tokens_see_only_the_given_images_and_record_them(tiny, folders, tmp_path):
    paths = train_category_tokens(folders["real"], tmp_path / "tokens", tiny, [(0, 10), (11, 30)], TokenTrainingConfig(steps=1, **FAST),
                                  images={"field0", "field2", "field3"})
    assert [load_token(p).info["names"] for p in paths] == [["field0"], ["field2", "field3"]]
    assert load_token(paths[0]).info["select"]["only"] == ["field0", "field2", "field3"]
    with pytest.raises(DataError, match="no images left"):
        train_category_tokens(folders["real"], tmp_path / "none", tiny, [(0, 10)], TokenTrainingConfig(steps=1, **FAST),
                              images={"other"})


def test_stain_and_name_filters(tiny, folders, tmp_path):
    style = tmp_path / "real"
    shutil.copytree(folders["real"], style)
    with pytest.raises(DataError, match="no manifest.csv.*--names"):
        train_style_token(style, tmp_path / "a.safetensors", tiny, TokenTrainingConfig(steps=1, **FAST),
                          select=ImageFilter.of(stain="DAPI"))
    pd.DataFrame({"name": [f"field{i}" for i in range(4)], "count": [3, 8, 14, 20],
                  "stain": ["DAPI", "Cy3", "dapi", "Cy3"]}).to_csv(style / "manifest.csv", index=False)
    dapi = train_style_token(style, tmp_path / "b.safetensors", tiny, TokenTrainingConfig(steps=1, **FAST),
                             select=ImageFilter.of(stain="DAPI"))
    assert load_token(dapi).info["names"] == ["field0", "field2"]
    globbed = train_style_token(style, tmp_path / "c.safetensors", tiny, TokenTrainingConfig(steps=1, **FAST),
                                select=ImageFilter.of(names="field[13]"))
    assert load_token(globbed).info["names"] == ["field1", "field3"]
