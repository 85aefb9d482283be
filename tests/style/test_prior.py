"""The diffusion prior: trained from scratch, loaded like SD, resumable, with a live style token."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from instlib.config import TokenTrainingConfig
from instlib.data.images import write_image
from instlib.errors import InstlibError
from instlib.style import TransferConfig, load_components, load_token, stylize_images, train_style_token
from instlib.style import prior as prior_mod
from instlib.style.pixelspace import PixelSpace
from instlib.style.prior import LOSSES, MANIFEST, TOKEN, PriorConfig, train_prior

RES = 16
TINY = dict(resolution=RES, batch_size=8, channels=(8, 16), width=16, lr=2e-3)


def _two_domains(root, n=4, size=24):
    """Dim smooth fields and bright fields: a style the conditioning can learn in a few hundred steps."""
    rng = np.random.default_rng(0)
    for i in range(n):
        for name, level in (("dim", 30), ("bright", 200)):
            img = np.clip(level + rng.normal(0, 10, (size, size, 3)), 0, 255).astype(np.uint8)
            write_image(root / "images" / f"{name}{i}.png", img)
    return root


@pytest.fixture(scope="module")
def domains(tmp_path_factory):
    return _two_domains(tmp_path_factory.mktemp("domains"))


@pytest.fixture(scope="module")
def trained(domains, tmp_path_factory):
    """A tiny prior trained just long enough for its style token to carry the domain's brightness."""
    out = tmp_path_factory.mktemp("prior") / "prior"
    torch.set_num_threads(1)  # module fixtures run before the per-test one_thread fixture
    return train_prior(domains, out, PriorConfig(steps=300, checkpoint_every=100, **TINY), progress=False)


def _images(domains, name):
    from instlib.style.imaging import load_rgb

    return load_rgb(domains / "images" / f"{name}.png")


def test_prior_folder_loads_like_sd(trained):
    comps = load_components(str(trained), device="cpu")
    assert isinstance(comps.vae, PixelSpace) and comps.latent_factor == 1
    assert comps.unet.config.sample_size == RES
    for sub in ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "image_encoder"):
        assert (trained / sub).is_dir()
    assert not list(trained.rglob("*.bin")) and (trained / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    losses = (trained / LOSSES).read_text().splitlines()
    assert losses[0] == "step,loss" and len(losses) == 301
    first, last = (np.mean([float(r.split(",")[1]) for r in rows]) for rows in (losses[1:31], losses[-30:]))
    assert last < 0.7 * first  # it learned to denoise
    info = json.loads((trained / MANIFEST).read_text())
    assert info["images_seen"] == 300 * 8 and info["resolution"] == RES and info["images"] == 8


def test_style_token_and_transfer_run_on_prior(trained, domains, tmp_path):
    comps = load_components(str(trained), device="cpu")
    token = train_style_token(domains, tmp_path / "tok.safetensors", comps, TokenTrainingConfig(steps=2, resolution=RES),
                              progress=False)
    contents = [_images(domains, "dim0"), _images(domains, "dim1"), _images(domains, "bright2")]
    styles = [_images(domains, "bright0")] * 3
    cfg = TransferConfig(resolution=RES, steps=10, strength=0.7, guidance=3.0)
    tok = load_token(token)
    together = stylize_images(comps, tok, contents, styles, cfg, seeds=[1, 2, 3])
    alone = [stylize_images(comps, tok, [c], [s], cfg, seeds=[seed])[0]
             for c, s, seed in zip(contents, styles, [1, 2, 3])]
    again = stylize_images(comps, tok, contents, styles, cfg, seeds=[1, 2, 3])
    for a, b, c in zip(together, alone, again):
        assert a.shape == (24, 24, 3)
        np.testing.assert_array_equal(a, c)  # deterministic per seed
        # batch-independent up to the last float bits of batched convolutions: at most one grey level
        assert np.abs(a.astype(int) - b).max() <= 1 and (a != b).mean() < 0.05
    other = stylize_images(comps, tok, contents[:1], styles[:1], cfg, seeds=[9])[0]
    assert not np.array_equal(other, together[0])


def test_style_image_steers_the_output(trained, domains):
    """Same content and seed, no AdaIN (so the style image acts only through the token): two style images give
    measurably different outputs, and guidance (which only acts through the condition) changes the output."""
    comps = load_components(str(trained), device="cpu")
    token = load_token(trained / TOKEN)
    content = [_images(domains, "dim0")]
    cfg = TransferConfig(resolution=RES, steps=20, strength=0.9, guidance=3.0, adain=False)
    dim = stylize_images(comps, token, content, [_images(domains, "dim1")], cfg, seeds=[5])[0].astype(float)
    bright = stylize_images(comps, token, content, [_images(domains, "bright1")], cfg, seeds=[5])[0].astype(float)
    assert np.abs(bright - dim).mean() > 1.0  # well above the <= 1 level of float rounding
    no_guidance = TransferConfig(resolution=RES, steps=20, strength=0.9, guidance=1.0, adain=False)
    strong = TransferConfig(resolution=RES, steps=20, strength=0.9, guidance=10.0, adain=False)
    plain, guided = (stylize_images(comps, token, content, [_images(domains, "bright1")], c, seeds=[5])[0]
                     for c in (no_guidance, strong))
    assert np.abs(plain.astype(float) - guided).mean() > 1.0


def _weights(folder):
    return {sub: load_file(str(folder / sub / name)) for sub, name in
            (("unet", "diffusion_pytorch_model.safetensors"), ("image_encoder", "model.safetensors"))}


def test_interrupted_prior_resumes_bit_exact(domains, tmp_path, monkeypatch):
    cfg = PriorConfig(steps=6, checkpoint_every=2, **{**TINY, "batch_size": 4})
    whole = train_prior(domains, tmp_path / "whole", cfg, progress=False)

    real_checkpoint, calls = prior_mod._checkpoint, []

    def killed_after_second(*args, **kwargs):
        real_checkpoint(*args, **kwargs)
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt  # as a kill between two checkpoints: steps 5-6 are lost
    monkeypatch.setattr(prior_mod, "_checkpoint", killed_after_second)
    with pytest.raises(KeyboardInterrupt):
        train_prior(domains, tmp_path / "resumed", cfg, progress=False)
    monkeypatch.setattr(prior_mod, "_checkpoint", real_checkpoint)
    assert not (tmp_path / "resumed" / MANIFEST).exists()
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["step"] == 4
    train_prior(domains, tmp_path / "resumed", cfg, progress=False)
    a, b = _weights(whole), _weights(tmp_path / "resumed")
    for sub in a:
        assert a[sub].keys() == b[sub].keys()
        for key in a[sub]:
            torch.testing.assert_close(a[sub][key], b[sub][key], rtol=0, atol=0)
    assert (whole / LOSSES).read_text() == (tmp_path / "resumed" / LOSSES).read_text()
    assert load_file(str(whole / TOKEN)).keys() == load_file(str(tmp_path / "resumed" / TOKEN)).keys()


def test_refuses_other_output(domains, tmp_path):
    cfg = PriorConfig(steps=2, checkpoint_every=1, **{**TINY, "batch_size": 2})
    out = train_prior(domains, tmp_path / "p", cfg, progress=False)
    with pytest.raises(InstlibError, match="other settings"):
        train_prior(domains, out, PriorConfig(steps=2, checkpoint_every=1, seed=1, **{**TINY, "batch_size": 2}),
                    progress=False)
    train_prior(domains, out, PriorConfig(steps=2, checkpoint_every=1, seed=1, **{**TINY, "batch_size": 2}),
                overwrite=True, progress=False)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("x")
    with pytest.raises(InstlibError, match="no prior checkpoint"):
        train_prior(domains, tmp_path / "other", cfg, progress=False)
    with pytest.raises(InstlibError, match="smaller than"):
        train_prior(domains, tmp_path / "big", PriorConfig(steps=1, **{**TINY, "resolution": 32}), progress=False)


def test_prior_token_sees_normalised_embeddings_in_training(domains):
    """The token block gets unit-norm embeddings in training, as transfer gives it (conditioning.image_embeddings)."""
    config = PriorConfig(steps=1, **TINY)
    components, token = prior_mod.build_prior(config)
    nets = prior_mod._Trainable(components, token)
    norms = []
    nets.block.register_forward_pre_hook(lambda m, args: norms.append(args[0].norm(dim=-1)))
    images = [_images(domains, n) for n in ("dim0", "bright0")]
    with torch.no_grad():
        uncond = prior_mod.encode_prompts(components, [""])
    rng, g = prior_mod._step_rng(0, 0)
    prior_mod._loss(components, nets, images, uncond, config, rng, g)
    torch.testing.assert_close(norms[0], torch.ones(config.batch_size))
