"""InST transfer on a batch: latent AdaIN, stochastic inversion, a sampler with classifier-free guidance.

Per image (DESIGN.md section 4): VAE-encode content and style at their own pixel scale; AdaIN the
content latent to the whole style latent's channel statistics; noise it to ``t_enc``, let the UNet predict that noise
under the style prompt and re-noise the latent with the prediction (stochastic inversion); run the last
``int(strength * steps)`` steps of the ``steps``-step grid of the sampler (:mod:`instlib.style.samplers`:
the reference's DDIM with eta 0, or a multistep solver) with guidance ``eps_uc + g (eps_c - eps_uc)``
(guidance 1 is the conditional prediction alone: one UNet pass a step); decode and clamp to ``[0, 1]``.

``t_enc`` is the first timestep the sampler decodes (681 for strength 0.7, 50 DDIM steps), so the latent's
noise level is the one the sampler assumes. ``reference_timesteps=True`` reproduces the reference,
which encodes at ``int(strength * 1000) = 700`` and then decodes from 681.

The UNet sees ``resolution``-sized tiles of the content, never a squashed image
(:mod:`instlib.style.tiling`), or with ``resolution="auto"`` the whole padded image in one pass, its
self-attention in windows of the model's training size (:mod:`instlib.style.attention`), tiles only
when the image exceeds ``max_pixels``. The output has the content's size and pixel grid, so its labels
stay exact. Settings a preset decides (:class:`~instlib.config.style.TransferConfig`) are filled in by
the kind of model (:func:`model_kind`).

Precision: latents, noise and the scheduler's arithmetic are fp32 whatever the networks' dtype; the
networks may run in half precision (inputs are cast to their dtype, outputs back to fp32), as the
reference samples under fp16 autocast with fp32 latents between steps.

Every image draws its randomness (VAE posterior samples, inversion noise) from its own generator, in
the order content, style, noise; results do not depend on the batch it is in. With
``adain=False, inversion="noise"`` this is exactly diffusers' img2img.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils.torch_utils import randn_tensor

from instlib.config.style import TransferConfig
from instlib.errors import InstlibError
from instlib.style.attention import windowed_attention
from instlib.style.colour import keep_colour_axis
from instlib.style.conditioning import style_conditioning
from instlib.style.imaging import from_pixels, resize, to_pixels
from instlib.style.models import StyleComponents
from instlib.style.pixelspace import PixelSpace
from instlib.style.samplers import make_sampler
from instlib.style.tiling import TilePlan, check_tile, pad_image, plan_tiles, tiled
from instlib.style.tokens import StyleToken


def model_kind(components: StyleComponents) -> str:
    """``prior`` for an offline prior (pixel space, :mod:`instlib.style.prior`), else ``sd``: the key of
    :data:`~instlib.config.style.MODEL_PRESETS` that picks the transfer's default settings."""
    return "prior" if isinstance(components.vae, PixelSpace) else "sd"


def resolve(components: StyleComponents, config: TransferConfig) -> TransferConfig:
    """``config`` with the settings its preset decides filled in for this model."""
    return config if config.resolved else config.for_model(model_kind(components))


@dataclass(frozen=True)
class Layout:
    """How the UNet covers one padded image: tiles (``plan``), or the whole image at once (``plan=None``);
    ``windowed``: self-attention in windows of the model's training size."""

    pixel_size: tuple[int, int]
    plan: TilePlan | None
    windowed: bool


def unet_multiple(components: StyleComponents) -> int:
    """Pixels an image side must be a multiple of for the UNet (its down-samplings times the VAE's factor)."""
    return components.latent_factor * 2 ** (len(components.unet.config.block_out_channels) - 1)


def training_size(components: StyleComponents) -> int:
    """The square size in pixels the model was trained at."""
    size = components.unet.config.sample_size
    return int(size if isinstance(size, int) else size[0]) * components.latent_factor


def layout(components: StyleComponents, config: TransferConfig, height: int, width: int) -> Layout:
    """The layout of an ``height x width`` image under ``config`` (resolved): fixed tiles of ``resolution``, or
    with ``auto`` the whole image padded to the UNet's multiple when it fits ``max_pixels``, else the largest
    square tiles that do."""
    factor = components.latent_factor
    if config.resolution != "auto":
        check_tile(config.resolution, factor)
        plan = plan_tiles(height, width, config.resolution, factor, config.tiling, config.tile_overlap)
        return Layout(plan.pixel_size, plan, False)
    m = unet_multiple(components)
    whole = (-(-height // m) * m, -(-width // m) * m)
    if whole[0] * whole[1] <= config.max_pixels:
        return Layout(whole, None, True)
    tile = max(m, math.isqrt(config.max_pixels) // m * m)
    plan = plan_tiles(height, width, tile, factor, config.tiling, config.tile_overlap)
    return Layout(plan.pixel_size, plan, True)


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Give ``content`` (B, C, H, W) the per-channel mean and std of ``style`` (std = sqrt(unbiased var + eps))."""
    def stats(x):
        return x.mean(dim=(2, 3), keepdim=True), (x.var(dim=(2, 3), keepdim=True) + eps).sqrt()

    (mc, sc), (ms, ss) = stats(content), stats(style)
    return (content - mc) / sc * ss + ms


def encode_latents(components: StyleComponents, pixels: torch.Tensor,
                   generators: list[torch.Generator] | torch.Generator) -> torch.Tensor:
    """Scaled fp32 VAE latents of ``pixels`` in ``[-1, 1]``, sampled from the posterior (one generator per
    image, or one for the batch)."""
    posterior = components.vae.encode(pixels.to(components.vae.dtype)).latent_dist
    return posterior.sample(generator=generators).float() * components.vae.config.scaling_factor


def decode_latents(components: StyleComponents, latents: torch.Tensor) -> torch.Tensor:
    """fp32 images in ``[0, 1]`` from scaled latents."""
    x = components.vae.decode((latents / components.vae.config.scaling_factor).to(components.vae.dtype)).sample
    return (x.float() / 2 + 0.5).clamp(0, 1)


def predict_noise(components: StyleComponents, latents: torch.Tensor, t: int | torch.Tensor,
                  states: torch.Tensor) -> torch.Tensor:
    """The UNet's fp32 noise prediction; it runs in its own dtype and (channels_last) layout on inputs cast to it."""
    dtype = components.unet.dtype
    latents = latents.to(dtype, memory_format=torch.channels_last)
    return components.unet(latents, t, encoder_hidden_states=states.to(dtype)).sample.float()


def timesteps(scheduler: SchedulerMixin, config: TransferConfig) -> tuple[int, torch.Tensor]:
    """``(t_enc, grid)``: the inversion timestep (the sampler's first decoded timestep) and the timesteps
    decoded (sets the scheduler's grid). ``config`` must be resolved (:func:`resolve`)."""
    scheduler.set_timesteps(config.steps)
    n = min(int(config.steps * config.strength), config.steps)
    grid = scheduler.timesteps[config.steps - n:]
    if config.reference_timesteps:
        train_steps = scheduler.config.num_train_timesteps
        return min(int(config.strength * train_steps), train_steps - 1), grid
    return int(grid[0]), grid


def _merged(components: StyleComponents, latents: torch.Tensor, t: int | torch.Tensor, plan: TilePlan | None,
            states: list[torch.Tensor], combine: Callable[..., torch.Tensor] | None = None) -> torch.Tensor:
    """Noise prediction for ``latents`` over the tiles of ``plan`` (the whole latent when None); with several
    ``states`` the UNet runs once on all of them and ``combine`` merges their predictions per tile."""
    def per_tile(x: torch.Tensor, n: int) -> torch.Tensor:
        cond = torch.cat([s.repeat(n, 1, 1) for s in states])
        eps = predict_noise(components, torch.cat([x] * len(states)), t, cond)
        return combine(*eps.chunk(len(states))) if combine else eps

    return per_tile(latents, 1) if plan is None else tiled(per_tile, latents, plan)


def invert(components: StyleComponents, scheduler: DDIMScheduler, init: torch.Tensor, cond: torch.Tensor,
           t_enc: int, generators: list[torch.Generator], inversion: str = "stochastic",
           plan: TilePlan | None = None) -> torch.Tensor:
    """The fp32 latent the DDIM loop starts from, at noise level ``t_enc``.

    ``noise``: ``sqrt(abar) init + sqrt(1 - abar) noise`` (img2img). ``stochastic``: the same with the noise
    replaced by the UNet's prediction of it from that noisy latent under the style prompt ``cond``
    (tile by tile over ``plan``; the whole latent at once when None).
    """
    init = init.float()
    t = torch.full((init.shape[0],), t_enc, device=init.device, dtype=torch.long)
    noise = randn_tensor(init.shape, generator=generators, device=init.device, dtype=torch.float32)
    noisy = scheduler.add_noise(init, noise, t)
    if inversion == "noise":
        return noisy
    eps_hat = _merged(components, noisy, t_enc, plan, [cond])
    return scheduler.add_noise(init, eps_hat, t)


def denoise(components: StyleComponents, scheduler: SchedulerMixin, latents: torch.Tensor, grid: torch.Tensor,
            cond: torch.Tensor, uncond: torch.Tensor, guidance: float, plan: TilePlan | None = None) -> torch.Tensor:
    """The sampler's steps over ``grid`` (DDIM: eta 0) with classifier-free guidance: one UNet call on
    ``[uncond; cond]`` per step (all tiles of ``plan`` in it); the latent and the scheduler's step stay fp32.
    ``scheduler`` must be fresh with its grid set (multistep solvers keep the earlier steps' outputs)."""
    latents = latents.float()
    for t in grid:
        if guidance == 1.0:  # guidance 1 is the conditional prediction alone: skip the unconditional half
            eps = _merged(components, latents, t, plan, [cond])
        else:
            eps = _merged(components, latents, t, plan, [uncond, cond],
                          lambda eps_uc, eps_c: eps_uc + guidance * (eps_c - eps_uc))
        latents = scheduler.step(eps, t, latents).prev_sample  # DDIM's eta defaults to 0
    return latents


def _adain_to_styles(components: StyleComponents, latents: torch.Tensor, style: list[torch.Tensor],
                     generators: list[torch.Generator]) -> torch.Tensor:
    """AdaIN of each content latent to its own style image's whole latent (styles may differ in size)."""
    return torch.cat([adain(z[None], encode_latents(components, s[None], g))
                      for z, s, g in zip(latents, style, generators)])


@torch.no_grad()
def stylize(components: StyleComponents, content: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
            config: TransferConfig, generators: list[torch.Generator],
            style: torch.Tensor | list[torch.Tensor] | None = None) -> torch.Tensor:
    """Styled images ``(B, 3, H, W)`` in ``[0, 1]`` (fp32) from content pixels in ``[-1, 1]``.

    ``content`` must already have the padded size of its :func:`layout` (:func:`stylize_images` pads it).
    ``style``: with AdaIN, each image's style pixels (any size that is a multiple of the VAE's factor), as a
    batch or a list. Settings the preset decides are filled in for this model (:func:`resolve`).
    """
    config = resolve(components, config)
    if config.adain and style is None:
        raise InstlibError("AdaIN needs the style images")
    where = layout(components, config, *content.shape[2:])
    if where.pixel_size != tuple(content.shape[2:]):
        raise InstlibError(f"content of {tuple(content.shape[2:])} pixels does not fit resolution {config.resolution} "
                           f"('{config.tiling}' tiles); pad it to {where.pixel_size} first")
    # Fresh schedulers per call: set_timesteps mutates them and multistep solvers carry state between steps.
    noiser = DDIMScheduler.from_config(components.scheduler.config)  # add_noise: q(x_t | x_0), the same for all
    scheduler = make_sampler(config.sampler, components.scheduler.config)
    t_enc, grid = timesteps(scheduler, config)
    latents = encode_latents(components, content, generators)
    if config.adain:
        latents = _adain_to_styles(components, latents, list(style), generators)
    attention = windowed_attention(components.unet) if where.windowed else contextlib.nullcontext()
    with attention:
        latents = invert(components, noiser, latents, cond, t_enc, generators, config.inversion, where.plan)
        latents = denoise(components, scheduler, latents, grid, cond, uncond, config.guidance, where.plan)
    return decode_latents(components, latents)


def _to_multiple(size: tuple[int, ...], factor: int) -> tuple[int, int]:
    return tuple(-(-n // factor) * factor for n in size[:2])


def stylize_images(components: StyleComponents, tokens: StyleToken | list[StyleToken], contents: list[np.ndarray],
                   styles: list[np.ndarray], config: TransferConfig, seeds: list[int],
                   token_images: list[np.ndarray] | None = None) -> list[np.ndarray]:
    """Style ``uint8 (H, W, 3)`` content images with their style images; results at each content's own size
    and pixel grid (tiled, never resized: see :mod:`instlib.style.tiling`).

    ``tokens``: one token for all, or one per image (category tokens). ``seeds``: one per image. The token
    sees the whole style image resized to ``resolution`` (as in training); AdaIN takes the statistics of the
    whole style image at its own pixel scale, the scale the content is restyled at. A gray or single-hue
    style image gives a styled image of that colour (:mod:`instlib.style.colour`). With ``resolution="auto"``
    the token sees the style image at the model's training size. ``token_images``: the images the token sees
    instead of the style images (``condition="another"``: another image's); with ``condition="none"`` the
    prompt is empty.
    """
    config = resolve(components, config)
    factor = components.latent_factor
    if config.resolution != "auto":
        check_tile(config.resolution, factor)
    tokens = tokens if isinstance(tokens, list) else [tokens] * len(contents)
    side = training_size(components) if config.resolution == "auto" else config.resolution
    seen = styles if token_images is None else token_images
    cond, uncond = style_conditioning(components, tokens, [resize(s, (side, side)) for s in seen])
    if config.condition == "none":
        cond = uncond
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    groups: dict[tuple[int, int], list[int]] = {}  # images of one padded size share the network calls
    for i, c in enumerate(contents):
        groups.setdefault(layout(components, config, *c.shape[:2]).pixel_size, []).append(i)
    out: list[np.ndarray] = [None] * len(contents)
    for padded, idx in groups.items():
        content = to_pixels([pad_image(contents[i], padded) for i in idx], components.device, components.dtype)
        style = [to_pixels([pad_image(styles[i], _to_multiple(styles[i].shape, factor))], components.device,
                           components.dtype)[0] for i in idx] if config.adain else None
        styled = stylize(components, content, cond[idx], uncond[idx], config, [generators[i] for i in idx], style)
        for i, img in zip(idx, from_pixels(styled)):
            out[i] = keep_colour_axis(np.ascontiguousarray(img[:contents[i].shape[0], :contents[i].shape[1]]),
                                      styles[i])
    return out
