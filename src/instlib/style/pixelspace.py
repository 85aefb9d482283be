"""An exact identity "autoencoder": diffusion in pixel space behind the VAE interface InST uses.

A prior trained from scratch on a few dozen micrographs has no use for a learned latent space: pixels
are small enough at 64-128 px, and an identity loses nothing (no VAE blur on nuclei texture, no
training). It has the calls transfer and token training make on an ``AutoencoderKL``:
``encode(x).latent_dist.sample(generator)`` / ``.mode()``, ``decode(z).sample``, ``config.scaling_factor``
(1) and ``config.block_out_channels`` of length 1 (latent factor 1). Latent AdaIN is then AdaIN of the
per-channel intensity statistics. Saved and loaded with ``save_pretrained`` / ``from_pretrained``.
"""

from __future__ import annotations

import torch
from diffusers import ConfigMixin, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.attention import AttentionMixin
from diffusers.models.autoencoders.vae import DecoderOutput, DiagonalGaussianDistribution
from diffusers.models.modeling_outputs import AutoencoderKLOutput


class PixelSpace(ModelMixin, AttentionMixin, ConfigMixin):
    """``z = x`` and ``x = z``, for ``channels``-channel images in ``[-1, 1]``."""

    @register_to_config
    def __init__(self, channels: int = 3, scaling_factor: float = 1.0, block_out_channels: tuple[int, ...] = (3,)):
        super().__init__()
        # diffusers reads a model's device and dtype from its tensors; this one also keeps the weights file
        # non-empty. Multiplying by it casts inputs to the model's dtype, as a real encoder's first layer does.
        self.register_buffer("unit", torch.ones(()))

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> AutoencoderKLOutput:
        """A posterior with zero variance at ``x``: ``sample()`` still draws (and discards) the noise an
        ``AutoencoderKL`` would, so generators advance as with SD."""
        mean = x * self.unit
        posterior = DiagonalGaussianDistribution(torch.cat([mean, torch.zeros_like(mean)], dim=1), deterministic=True)
        return AutoencoderKLOutput(latent_dist=posterior) if return_dict else (posterior,)

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput:
        """The pixels ``z``."""
        x = z * self.unit
        return DecoderOutput(sample=x) if return_dict else (x,)
