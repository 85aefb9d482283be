"""The transfer maths: AdaIN, timesteps, stochastic inversion, DDIM + guidance, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, StableDiffusionImg2ImgPipeline

from instlib.errors import InstlibError
from instlib.style import TransferConfig, adain, stylize, stylize_images
from instlib.style.conditioning import style_conditioning
from instlib.style.imaging import to_pixels
from instlib.style.tokens import new_token
from instlib.style.transfer import invert, timesteps
from style_helpers import RES, random_uint8


def _gens(seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.fixture(scope="module")
def token(tiny):
    return new_token(tiny.hidden_size, base_model="tiny", seed=5)


@pytest.fixture(scope="module")
def batch(tiny, token):
    contents = [random_uint8((RES, RES, 3), s) for s in (1, 2)]
    styles = [random_uint8((RES, RES, 3), s) for s in (3, 4)]
    cond, uncond = style_conditioning(tiny, [token] * 2, styles)
    return {"contents": contents, "styles": styles, "cond": cond, "uncond": uncond,
            "content": to_pixels(contents, tiny.device, tiny.dtype),
            "style": to_pixels(styles, tiny.device, tiny.dtype)}


def test_adain_gives_the_style_statistics():
    content = torch.randn(2, 4, 8, 8) * 3 + 1
    style = torch.randn(2, 4, 8, 8) * torch.tensor([0.5, 1, 2, 4])[None, :, None, None] - 2
    out = adain(content, style)
    torch.testing.assert_close(out.mean(dim=(2, 3)), style.mean(dim=(2, 3)), atol=1e-5, rtol=0)
    torch.testing.assert_close(out.std(dim=(2, 3)), style.std(dim=(2, 3)), atol=1e-4, rtol=1e-4)
    # the content's normalised pattern survives
    norm = (content - content.mean((2, 3), keepdim=True)) / content.std(dim=(2, 3), keepdim=True)
    norm_out = (out - out.mean((2, 3), keepdim=True)) / out.std(dim=(2, 3), keepdim=True)
    torch.testing.assert_close(norm, norm_out, atol=1e-4, rtol=1e-4)


def test_timesteps_consistent_and_reference(tiny):
    sched = DDIMScheduler.from_config(tiny.scheduler.config)
    t_enc, grid = timesteps(sched, TransferConfig())
    assert t_enc == 681 == int(grid[0]) and len(grid) == 35 and int(grid[-1]) == 1
    t_ref, grid_ref = timesteps(sched, TransferConfig(reference_timesteps=True))
    assert t_ref == 700 and torch.equal(grid, grid_ref)
    assert timesteps(sched, TransferConfig(strength=1.0, reference_timesteps=True))[0] == 999


def test_no_adain_noise_inversion_is_img2img(tiny, batch):
    """With AdaIN and stochastic inversion off and consistent timesteps: exactly diffusers' img2img."""
    config = TransferConfig(strength=0.7, steps=10, guidance=10.0, adain=False, inversion="noise", resolution=RES)
    ours = stylize(tiny, batch["content"], batch["cond"], batch["uncond"], config, _gens([7, 8]))
    pipe = StableDiffusionImg2ImgPipeline(vae=tiny.vae, text_encoder=tiny.text_encoder, tokenizer=tiny.tokenizer,
                                          unet=tiny.unet, scheduler=DDIMScheduler.from_config(tiny.scheduler.config),
                                          safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    theirs = pipe(image=(batch["content"] + 1) / 2, prompt_embeds=batch["cond"], negative_prompt_embeds=batch["uncond"],
                  strength=0.7, num_inference_steps=10, guidance_scale=10.0, generator=_gens([7, 8]),
                  output_type="pt").images
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    quirk = stylize(tiny, batch["content"], batch["cond"], batch["uncond"],
                    TransferConfig(**{**config.__dict__, "reference_timesteps": True}), _gens([7, 8]))
    assert (quirk - theirs).abs().max() > 1e-3  # encoding at 700, decoding from 681: not img2img


def test_stochastic_inversion_uses_the_unets_noise(tiny, batch):
    sched = DDIMScheduler.from_config(tiny.scheduler.config)
    init = torch.randn(2, 4, RES // 8, RES // 8)
    seen = {}

    def record(module, args, kwargs, output):
        seen["input"], seen["eps"] = args[0].clone(), output.sample.clone()

    handle = tiny.unet.register_forward_hook(record, with_kwargs=True)
    try:
        z = invert(tiny, sched, init, batch["cond"], 681, _gens([1, 2]), "stochastic")
    finally:
        handle.remove()
    abar = sched.alphas_cumprod[681]
    noise = torch.cat([torch.randn((1, *init.shape[1:]), generator=g) for g in _gens([1, 2])])
    # the UNet saw the randomly noised latent ...
    torch.testing.assert_close(seen["input"], abar.sqrt() * init + (1 - abar).sqrt() * noise)
    # ... and the result is re-noised with its prediction, not with the random noise
    torch.testing.assert_close(z, abar.sqrt() * init + (1 - abar).sqrt() * seen["eps"])
    assert not torch.allclose(seen["eps"], noise, atol=1e-2)
    assert not torch.allclose(z, invert(tiny, sched, init, batch["cond"], 681, _gens([1, 2]), "noise"), atol=1e-3)


def test_stylize_runs_stochastic_inversion_by_default(tiny, batch):
    """stylize itself, not only invert: its default is stochastic inversion, and it passes the setting on."""
    kw = dict(strength=0.7, steps=10, guidance=10.0, adain=False, resolution=RES)

    def run(config):
        return stylize(tiny, batch["content"], batch["cond"], batch["uncond"], config, _gens([7, 8]))

    default = run(TransferConfig(**kw))
    torch.testing.assert_close(default, run(TransferConfig(**kw, inversion="stochastic")), atol=0, rtol=0)
    assert (default - run(TransferConfig(**kw, inversion="noise"))).abs().max() > 1e-3


def test_adain_changes_the_result(tiny, batch):
    base = TransferConfig(steps=10, resolution=RES)
    with_adain = stylize(tiny, batch["content"], batch["cond"], batch["uncond"], base, _gens([1, 2]), batch["style"])
    without = stylize(tiny, batch["content"], batch["cond"], batch["uncond"],
                      TransferConfig(steps=10, resolution=RES, adain=False), _gens([1, 2]))
    assert (with_adain - without).abs().max() > 1e-3
    with pytest.raises(InstlibError, match="AdaIN needs"):
        stylize(tiny, batch["content"], batch["cond"], batch["uncond"], base, _gens([1, 2]))


def test_deterministic_per_seed_and_independent_of_batch(tiny, token):
    contents = [random_uint8((40, 56, 3), s) for s in (10, 11, 12)]
    styles = [random_uint8((30, 30, 3), s) for s in (13, 14, 15)]
    config = TransferConfig(steps=10, strength=0.5, resolution=RES)
    together = stylize_images(tiny, token, contents, styles, config, [1, 2, 3])
    again = stylize_images(tiny, token, contents, styles, config, [1, 2, 3])
    alone = [stylize_images(tiny, token, [c], [s], config, [k])[0] for c, s, k in zip(contents, styles, (1, 2, 3))]
    for a, b, c in zip(together, again, alone):
        assert a.shape == (40, 56, 3) and a.dtype == np.uint8
        assert np.array_equal(a, b)
        # batched and single convolutions round differently in the last float bits: at most one grey level
        assert np.abs(a.astype(int) - c).max() <= 1 and (a != c).mean() < 0.01
    other = stylize_images(tiny, token, contents[:1], styles[:1], config, [99])[0]
    assert np.abs(other.astype(int) - together[0]).max() > 10


def test_invalid_settings():
    for bad in (dict(strength=0.0), dict(strength=1.5), dict(steps=1, strength=0.5), dict(inversion="ddim")):
        with pytest.raises(InstlibError):
            TransferConfig(**bad)


def test_resolution_must_fit_the_vae(tiny, token):
    with pytest.raises(InstlibError, match="multiple"):
        stylize_images(tiny, token, [random_uint8((8, 8, 3), 0)], [random_uint8((8, 8, 3), 1)],
                       TransferConfig(resolution=36), [0])
