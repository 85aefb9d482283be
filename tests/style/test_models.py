"""Component loading: built-in tiny models, local folders, and hub ids that cannot be had offline."""

from __future__ import annotations

import time

import huggingface_hub.constants
import pytest
import torch

from instlib.errors import InstlibError
from instlib.style import BUILDERS, load_components, save_components
from instlib.style.models import DEFAULT_MODEL


def test_tiny_is_identical_in_every_build(tiny):
    again = load_components("tiny", device="cpu")
    for a, b in zip(tiny.unet.state_dict().values(), again.unet.state_dict().values()):
        assert torch.equal(a, b)
    assert tiny.dtype == torch.float32 and tiny.device.type == "cpu"
    assert tiny.latent_factor == 8 and tiny.hidden_size == 32
    assert len(tiny.tokenizer("*", add_special_tokens=False).input_ids) == 1


def test_scheduler_has_the_reference_ddim_grid(tiny):
    sched = tiny.scheduler.__class__.from_config(tiny.scheduler.config)
    sched.set_timesteps(50)
    assert sched.timesteps[0] == 981 and sched.timesteps[-1] == 1 and sched.timesteps[15] == 681
    assert not sched.config.clip_sample and not sched.config.set_alpha_to_one


def test_sdpa_attention(tiny):
    names = {type(p).__name__ for p in tiny.unet.attn_processors.values()}
    assert names == {"AttnProcessor2_0"}
    assert tiny.text_encoder.config._attn_implementation == "sdpa"


def test_saved_folder_loads_back_identically(tiny, tmp_path):
    root = save_components(tiny, tmp_path / "sd")
    loaded = load_components(str(root), device="cpu")
    assert loaded.model == str(root)
    for name in ("unet", "vae", "text_encoder", "image_encoder"):
        for a, b in zip(getattr(tiny, name).state_dict().values(), getattr(loaded, name).state_dict().values()):
            assert torch.equal(a, b), name
    assert loaded.tokenizer("* a").input_ids == tiny.tokenizer("* a").input_ids
    assert loaded.scheduler.config.steps_offset == 1 and not loaded.scheduler.config.clip_sample


def test_folder_without_unet_is_refused(tiny, tmp_path):
    root = save_components(tiny, tmp_path / "sd")
    (root / "unet" / "config.json").unlink()
    (root / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (root / "unet").rmdir()
    with pytest.raises(InstlibError, match="lacks unet/"):
        load_components(str(root), device="cpu")


def test_missing_local_folder(tmp_path):
    with pytest.raises(InstlibError, match="no such model folder"):
        load_components(str(tmp_path / "nope"), device="cpu")


def test_hub_id_offline_fails_at_once_and_says_how(monkeypatch, tmp_path):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    start = time.monotonic()
    with pytest.raises(InstlibError) as err:
        load_components(DEFAULT_MODEL, device="cpu")
    assert time.monotonic() - start < 10
    assert DEFAULT_MODEL in str(err.value) and "hf download" in str(err.value) and "tiny" in str(err.value)


def test_builders_registry():
    assert set(BUILDERS) == {"tiny", "sd14-random"}
