"""InST transfer on a batch: latent AdaIN, stochastic inversion, DDIM with classifier-free guidance.

Per image (DESIGN.md section 4): VAE-encode content (and style) at ``resolution``; AdaIN the content
latent to the style latent's channel statistics; noise it to ``t_enc``, let the UNet predict that noise
under the style prompt and re-noise the latent with the prediction (stochastic inversion); run the last
``int(strength * steps)`` steps of the ``steps``-step DDIM grid (eta 0) with guidance
``eps_uc + g (eps_c - eps_uc)``; decode and clamp to ``[0, 1]``.

``t_enc`` is the first timestep the DDIM loop decodes (681 for strength 0.7, 50 steps), so the latent's
noise level is the one the sampler assumes. ``reference_timesteps=True`` reproduces the reference,
which encodes at ``int(strength * 1000) = 700`` and then decodes from 681.

Every image draws its randomness (VAE posterior samples, inversion noise) from its own generator, in
the order content, style, noise; results do not depend on the batch it is in. With
``adain=False, inversion="noise"`` this is exactly diffusers' img2img.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from diffusers import DDIMScheduler
from diffusers.utils.torch_utils import randn_tensor

from instlib.errors import InstlibError
from instlib.style.conditioning import style_conditioning
from instlib.style.imaging import from_pixels, resize, to_pixels
from instlib.style.models import StyleComponents
from instlib.style.tokens import StyleToken

INVERSIONS = ("stochastic", "noise")


@dataclass(frozen=True)
class TransferConfig:
    """Settings of one transfer (the reference's values are the defaults, at 512 x 512)."""

    strength: float = 0.7
    steps: int = 50
    guidance: float = 10.0
    adain: bool = True
    inversion: str = "stochastic"
    reference_timesteps: bool = False
    resolution: int = 512

    def __post_init__(self):
        if not 0.0 < self.strength <= 1.0:
            raise InstlibError(f"strength must be in (0, 1], got {self.strength}")
        if self.steps < 1 or int(self.steps * self.strength) < 1:
            raise InstlibError(f"strength x steps must give at least one DDIM step, got {self.strength} x {self.steps}")
        if self.inversion not in INVERSIONS:
            raise InstlibError(f"inversion must be one of {INVERSIONS}, got {self.inversion!r}")
        if self.resolution < 8:
            raise InstlibError(f"resolution must be at least 8, got {self.resolution}")


def adain(content: torch.Tensor, style: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Give ``content`` (B, C, H, W) the per-channel mean and std of ``style`` (std = sqrt(unbiased var + eps))."""
    def stats(x):
        return x.mean(dim=(2, 3), keepdim=True), (x.var(dim=(2, 3), keepdim=True) + eps).sqrt()

    (mc, sc), (ms, ss) = stats(content), stats(style)
    return (content - mc) / sc * ss + ms


def encode_latents(components: StyleComponents, pixels: torch.Tensor,
                   generators: list[torch.Generator] | torch.Generator) -> torch.Tensor:
    """Scaled VAE latents of ``pixels`` in ``[-1, 1]``, sampled from the posterior (one generator per image,
    or one for the batch)."""
    posterior = components.vae.encode(pixels).latent_dist
    return posterior.sample(generator=generators) * components.vae.config.scaling_factor


def decode_latents(components: StyleComponents, latents: torch.Tensor) -> torch.Tensor:
    """Images in ``[0, 1]`` from scaled latents."""
    x = components.vae.decode(latents / components.vae.config.scaling_factor).sample
    return (x / 2 + 0.5).clamp(0, 1)


def timesteps(scheduler: DDIMScheduler, config: TransferConfig) -> tuple[int, torch.Tensor]:
    """``(t_enc, grid)``: the inversion timestep and the DDIM timesteps decoded (sets the scheduler's grid)."""
    scheduler.set_timesteps(config.steps)
    n = min(int(config.steps * config.strength), config.steps)
    grid = scheduler.timesteps[config.steps - n:]
    if config.reference_timesteps:
        train_steps = scheduler.config.num_train_timesteps
        return min(int(config.strength * train_steps), train_steps - 1), grid
    return int(grid[0]), grid


def invert(components: StyleComponents, scheduler: DDIMScheduler, init: torch.Tensor, cond: torch.Tensor,
           t_enc: int, generators: list[torch.Generator], inversion: str = "stochastic") -> torch.Tensor:
    """The latent the DDIM loop starts from, at noise level ``t_enc``.

    ``noise``: ``sqrt(abar) init + sqrt(1 - abar) noise`` (img2img). ``stochastic``: the same with the noise
    replaced by the UNet's prediction of it from that noisy latent under the style prompt ``cond``.
    """
    t = torch.full((init.shape[0],), t_enc, device=init.device, dtype=torch.long)
    noise = randn_tensor(init.shape, generator=generators, device=init.device, dtype=init.dtype)
    noisy = scheduler.add_noise(init, noise, t)
    if inversion == "noise":
        return noisy
    eps_hat = components.unet(noisy, t, encoder_hidden_states=cond).sample
    return scheduler.add_noise(init, eps_hat, t)


def denoise(components: StyleComponents, scheduler: DDIMScheduler, latents: torch.Tensor, grid: torch.Tensor,
            cond: torch.Tensor, uncond: torch.Tensor, guidance: float) -> torch.Tensor:
    """DDIM (eta 0) over ``grid`` with classifier-free guidance: one UNet call on ``[uncond; cond]`` per step."""
    for t in grid:
        if guidance == 1.0:  # guidance 1 is the conditional prediction alone: skip the unconditional half
            eps = components.unet(latents, t, encoder_hidden_states=cond).sample
        else:
            eps_uc, eps_c = components.unet(torch.cat([latents, latents]), t,
                                            encoder_hidden_states=torch.cat([uncond, cond])).sample.chunk(2)
            eps = eps_uc + guidance * (eps_c - eps_uc)
        latents = scheduler.step(eps, t, latents, eta=0.0).prev_sample
    return latents


@torch.no_grad()
def stylize(components: StyleComponents, content: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor,
            config: TransferConfig, generators: list[torch.Generator],
            style: torch.Tensor | None = None) -> torch.Tensor:
    """Styled images ``(B, 3, H, W)`` in ``[0, 1]`` from content (and, with AdaIN, style) pixels in ``[-1, 1]``."""
    if config.adain and style is None:
        raise InstlibError("AdaIN needs the style images")
    scheduler = DDIMScheduler.from_config(components.scheduler.config)  # own copy: set_timesteps mutates it
    t_enc, grid = timesteps(scheduler, config)
    latents = encode_latents(components, content, generators)
    if config.adain:
        latents = adain(latents, encode_latents(components, style, generators))
    latents = invert(components, scheduler, latents, cond, t_enc, generators, config.inversion)
    latents = denoise(components, scheduler, latents, grid, cond, uncond, config.guidance)
    return decode_latents(components, latents)


def stylize_images(components: StyleComponents, tokens: StyleToken | list[StyleToken], contents: list[np.ndarray],
                   styles: list[np.ndarray], config: TransferConfig, seeds: list[int]) -> list[np.ndarray]:
    """Style ``uint8 (H, W, 3)`` content images with their style images; results at each content's own size.

    ``tokens``: one token for all, or one per image (category tokens). ``seeds``: one per image.
    """
    if config.resolution % components.latent_factor:
        raise InstlibError(f"resolution {config.resolution} is not a multiple of the VAE's factor "
                           f"{components.latent_factor}")
    tokens = tokens if isinstance(tokens, list) else [tokens] * len(contents)
    size = (config.resolution, config.resolution)
    small_styles = [resize(s, size) for s in styles]
    cond, uncond = style_conditioning(components, tokens, small_styles)
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    content = to_pixels([resize(c, size) for c in contents], components.device, components.dtype)
    style = to_pixels(small_styles, components.device, components.dtype) if config.adain else None
    out = from_pixels(stylize(components, content, cond, uncond, config, generators, style))
    return [resize(o, c.shape[:2]) for o, c in zip(out, contents)]
