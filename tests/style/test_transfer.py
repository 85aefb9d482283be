"""The transfer maths: AdaIN, timesteps, stochastic inversion, DDIM + guidance, batching."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionImg2ImgPipeline

from instlib.errors import InstlibError
from instlib.style import TransferConfig, adain, load_components, stylize, stylize_images
from instlib.style.conditioning import style_conditioning
from instlib.style.imaging import to_pixels
from instlib.style.tiling import TILINGS, plan_tiles, tiled
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
    t_enc, grid = timesteps(sched, TransferConfig(preset="reference"))
    assert t_enc == 681 == int(grid[0]) and len(grid) == 35 and int(grid[-1]) == 1
    t_ref, grid_ref = timesteps(sched, TransferConfig(preset="reference", reference_timesteps=True))
    assert t_ref == 700 and torch.equal(grid, grid_ref)
    assert timesteps(sched, TransferConfig(preset="reference", strength=1.0, reference_timesteps=True))[0] == 999


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


def test_stylize_runs_stochastic_inversion_by_default(tiny, batch):
    """``stylize`` itself (not only ``invert``) must invert stochastically unless told otherwise."""
    default = TransferConfig(steps=10, strength=0.5, resolution=RES, adain=False)
    calls = []
    handle = tiny.unet.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    try:
        ours = stylize(tiny, batch["content"], batch["cond"], batch["uncond"], default, _gens([3, 4]))
    finally:
        handle.remove()
    assert calls == [2] + [4] * 5  # one conditional inversion call, then 5 guided steps on [uncond; cond]
    explicit = stylize(tiny, batch["content"], batch["cond"], batch["uncond"],
                       TransferConfig(**{**default.__dict__, "inversion": "stochastic"}), _gens([3, 4]))
    noise = stylize(tiny, batch["content"], batch["cond"], batch["uncond"],
                    TransferConfig(**{**default.__dict__, "inversion": "noise"}), _gens([3, 4]))
    torch.testing.assert_close(ours, explicit, atol=0, rtol=0)
    assert (ours - noise).abs().max() > 1e-3


def _record_vae_and_unet(components, monkeypatch):
    seen = {"encode": [], "unet": []}
    real_encode = components.vae.encode
    monkeypatch.setattr(components.vae, "encode", lambda x, *a, **k: seen["encode"].append(x.clone()) or
                        real_encode(x, *a, **k))
    handle = components.unet.register_forward_hook(lambda m, args, out: seen["unet"].append(tuple(args[0].shape)))
    return seen, handle


@pytest.mark.parametrize("shape", [(40, 96), (20, 24), (33, 50)])
def test_content_is_tiled_never_squashed(tiny, token, monkeypatch, shape):
    content, style = random_uint8((*shape, 3), 1), random_uint8((24, 40, 3), 2)
    seen, handle = _record_vae_and_unet(tiny, monkeypatch)
    try:
        out = stylize_images(tiny, token, [content], [style], TransferConfig(steps=4, resolution=RES), [0])[0]
    finally:
        handle.remove()
    assert out.shape == content.shape
    encoded = seen["encode"][0]  # the content as the VAE got it: its own pixels, mirrored out to a tileable size
    assert encoded.shape[2] >= max(shape[0], RES) and encoded.shape[3] >= max(shape[1], RES)
    assert encoded.shape[2] % 8 == 0 and encoded.shape[3] % 8 == 0
    torch.testing.assert_close(encoded[0, :, :shape[0], :shape[1]], to_pixels([content], "cpu", torch.float32)[0])
    if encoded.shape[2] > shape[0]:  # reflect padding: row H is row H - 2
        torch.testing.assert_close(encoded[0, :, shape[0]], encoded[0, :, shape[0] - 2])
    assert seen["encode"][1].shape[2:] == (24, 40)  # the style at its own scale (AdaIN statistics)
    assert {s[2:] for s in seen["unet"]} == {(RES // 8, RES // 8)}  # square tiles at the model's resolution


def test_blend_tiles_merge_back_exactly_and_grid_tiles_do_not_overlap():
    latents = torch.randn(2, 4, 13, 21)
    for tiling in TILINGS:
        plan = plan_tiles(13 * 8, 21 * 8, 64, 8, tiling)
        padded = torch.nn.functional.pad(latents, (0, plan.width - 21, 0, plan.height - 13))
        torch.testing.assert_close(tiled(lambda x, n: x * 1.0, padded, plan), padded)  # weights sum to one
        assert plan.rows[-1] + plan.tile == plan.height and plan.cols[-1] + plan.tile == plan.width
    blend, grid = plan_tiles(13 * 8, 21 * 8, 64, 8, "blend"), plan_tiles(13 * 8, 21 * 8, 64, 8, "grid")
    assert (blend.height, blend.width) == (13, 21)  # no padding needed: tiles overlap by at least a quarter
    assert blend.cols == (0, 4, 9, 13) and blend.rows == (0, 5)
    assert (grid.height, grid.width) == (16, 24) and grid.cols == (0, 8, 16)  # padded to whole tiles
    assert all(b - a == grid.tile for a, b in zip(grid.cols, grid.cols[1:]))


def test_grid_tiling_keeps_the_size_and_differs_from_blend(tiny, token):
    content, style = random_uint8((40, 72, 3), 5), random_uint8((40, 72, 3), 6)
    blend = stylize_images(tiny, token, [content], [style], TransferConfig(steps=4, resolution=RES), [1])[0]
    grid = stylize_images(tiny, token, [content], [style], TransferConfig(steps=4, resolution=RES, tiling="grid"),
                          [1])[0]
    assert blend.shape == grid.shape == content.shape
    assert np.abs(blend.astype(int) - grid).max() > 0
    with pytest.raises(InstlibError, match="unknown tiling 'squash'"):
        TransferConfig(tiling="squash")


def test_works_for_a_pixel_space_model(tiny, token):
    """Latent factor 1 (a pixel-space prior): tiles of ``resolution`` pixels, deterministic, batch-independent."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=8, layers_per_block=1, latent_channels=4,
                            down_block_types=["DownEncoderBlock2D"], up_block_types=["UpDecoderBlock2D"]).eval()
    pixel = dataclasses.replace(tiny, vae=vae)
    assert pixel.latent_factor == 1
    contents = [random_uint8((12, 30, 3), 1), random_uint8((20, 18, 3), 2)]
    styles = [random_uint8((16, 16, 3), 3), random_uint8((10, 14, 3), 4)]
    config = TransferConfig(steps=4, resolution=16)
    together = stylize_images(pixel, token, contents, styles, config, [1, 2])
    alone = [stylize_images(pixel, token, [c], [s], config, [k])[0] for c, s, k in zip(contents, styles, (1, 2))]
    for a, b, c in zip(together, alone, contents):
        assert a.shape == c.shape and np.abs(a.astype(int) - b).max() <= 1


def test_latents_and_scheduler_stay_fp32_with_half_precision_networks(token, monkeypatch):
    half = load_components("tiny", device="cpu", dtype=torch.bfloat16)
    assert half.unet.dtype == torch.bfloat16
    steps, unet_inputs = [], []
    real_step = DDIMScheduler.step

    def step(self, model_output, timestep, sample, *args, **kwargs):
        steps.append((model_output.dtype, sample.dtype))
        out = real_step(self, model_output, timestep, sample, *args, **kwargs)
        steps.append((out.prev_sample.dtype,))
        return out

    monkeypatch.setattr(DDIMScheduler, "step", step)
    handle = half.unet.register_forward_hook(lambda m, args, out: unet_inputs.append((args[0].dtype, out.sample.dtype)))
    try:
        out = stylize_images(half, token, [random_uint8((RES, 48, 3), 1)], [random_uint8((RES, RES, 3), 2)],
                             TransferConfig(steps=6, strength=0.5, resolution=RES), [0])[0]
    finally:
        handle.remove()
    assert out.shape == (RES, 48, 3) and len(steps) == 2 * 3
    assert set(steps) == {(torch.float32, torch.float32), (torch.float32,)}
    assert set(unet_inputs) == {(torch.bfloat16, torch.bfloat16)}  # the network itself runs in half precision


def test_many_tiles_are_merged_in_bounded_calls():
    plan = plan_tiles(40 * 8, 52 * 8, 64, 8)
    latents = torch.randn(1, 4, plan.height, plan.width)
    sizes = []
    merged = tiled(lambda x, n: sizes.append(n) or x * 2.0, latents, plan, max_tiles=5)
    assert plan.count > 5 and max(sizes) == 5 and sum(sizes) == plan.count
    torch.testing.assert_close(merged, latents * 2.0)


@pytest.mark.parametrize("sampler", ["dpmpp", "unipc"])
def test_solver_is_deterministic_per_seed_and_batch_independent(tiny, token, sampler):
    contents = [random_uint8((40, 56, 3), s) for s in (10, 11, 12)]
    styles = [random_uint8((30, 30, 3), s) for s in (13, 14, 15)]
    config = TransferConfig(steps=10, strength=0.5, resolution=RES, sampler=sampler)
    together = stylize_images(tiny, token, contents, styles, config, [1, 2, 3])
    again = stylize_images(tiny, token, contents, styles, config, [1, 2, 3])  # a fresh solver: no carried state
    alone = [stylize_images(tiny, token, [c], [s], config, [k])[0] for c, s, k in zip(contents, styles, (1, 2, 3))]
    for a, b, c in zip(together, again, alone):
        assert np.array_equal(a, b)
        assert np.abs(a.astype(int) - c).max() <= 1 and (a != c).mean() < 0.01
    assert np.abs(stylize_images(tiny, token, contents[:1], styles[:1], config, [99])[0].astype(int)
                  - together[0]).max() > 10
    ddim = stylize_images(tiny, token, contents[:1], styles[:1], config.updated(sampler="ddim"), [1])[0]
    assert np.abs(ddim.astype(int) - together[0]).max() > 0  # another sampler, another result


@pytest.mark.parametrize("sampler", ["dpmpp", "unipc"])
def test_solver_inverts_at_its_first_timestep(tiny, batch, sampler, monkeypatch):
    from instlib.style import transfer as transfer_mod
    from instlib.style.samplers import make_sampler

    config = TransferConfig(steps=10, strength=0.5, resolution=RES, sampler=sampler, guidance=1.0)
    seen, steps = {}, []
    real_invert = transfer_mod.invert
    monkeypatch.setattr(transfer_mod, "invert", lambda *a, **k: seen.setdefault("t_enc", a[4]) and real_invert(*a, **k))
    handle = tiny.unet.register_forward_hook(lambda m, args, out: steps.append(int(args[1])))
    try:
        stylize(tiny, batch["content"], batch["cond"], batch["uncond"], config, _gens([1, 2]), batch["style"])
    finally:
        handle.remove()
    solver = make_sampler(sampler, tiny.scheduler.config)
    solver.set_timesteps(10)
    grid = [int(t) for t in solver.timesteps[-5:]]
    assert seen["t_enc"] == grid[0] == steps[0] and steps[1:] == grid  # inversion at the first decoded step


def test_unknown_sampler_and_presets():
    with pytest.raises(InstlibError, match="unknown sampler 'euler'"):
        TransferConfig(sampler="euler")
    with pytest.raises(InstlibError, match="unknown preset"):
        TransferConfig(preset="fast")
    ref = TransferConfig(preset="reference")
    assert (ref.resolution, ref.steps, ref.guidance, ref.sampler) == (512, 50, 10.0, "ddim")
    prior = TransferConfig(guidance=3.0).for_model("prior")
    assert (prior.resolution, prior.sampler, prior.steps, prior.guidance) == ("auto", "ddim", 20, 3.0)  # a set value wins
    assert TransferConfig(resolution="auto").resolution == "auto" and TransferConfig(resolution="256").resolution == 256
    with pytest.raises(InstlibError, match="resolution"):
        TransferConfig(resolution="whole")
