"""InST style transfer on diffusers: style-token training and stochastic-inversion transfer.

- :mod:`~instlib.style.models`: the frozen networks (:func:`load_components`, :func:`save_components`)
- :mod:`~instlib.style.tokens`: the style token block and its safetensors file
- :mod:`~instlib.style.conditioning`: prompt ``*`` with the style token, the empty prompt
- :mod:`~instlib.style.train`: :func:`train_style_token`, :func:`train_category_tokens`
- :mod:`~instlib.style.tiling`: aspect-preserving tiles at the content's own pixel scale (:data:`TILINGS`)
- :mod:`~instlib.style.transfer`: AdaIN, stochastic inversion, a sampler with guidance (:func:`stylize_images`)
- :mod:`~instlib.style.samplers`: DDIM and the multistep solvers by name (:data:`SAMPLERS`)
- :mod:`~instlib.style.attention`: windowed self-attention for whole-image passes
- :mod:`~instlib.style.driver`: :func:`transfer_folder` (folder format, resume, shards)
- :mod:`~instlib.style.fidelity`: do the copied labels still match the styled image?
- :mod:`~instlib.style.colour`: styled images keep the style image's colour model (gray or one hue)
- :mod:`~instlib.style.prior`, :mod:`~instlib.style.pixelspace`: the offline diffusion prior learned from
  the user's own real images, and its exact pixel-space "autoencoder"
- :mod:`~instlib.style.realism`: a cross-validated real-vs-fake classifier as a realism score

Which real images a stage uses (stain, name glob, listed names) is an :class:`ImageFilter`
(:mod:`instlib.data.selection`), re-exported here.
"""

from instlib.config.style import PriorConfig, TokenTrainingConfig, TransferConfig
from instlib.data.selection import ImageFilter
from instlib.style.driver import image_seed, pair_styles, transfer_folder
from instlib.style.fidelity import Fidelity, filter_by_fidelity, measure_fidelity, measure_folder
from instlib.style.models import (BUILDERS, DEFAULT_IMAGE_ENCODER, DEFAULT_MODEL, StyleComponents, load_components,
                                  save_components)
from instlib.style.samplers import SAMPLERS
from instlib.style.tiling import TILINGS
from instlib.style.tokens import StyleToken, StyleTokenBlock, TokenConfig, load_token, load_tokens, save_token
from instlib.style.train import train_category_tokens, train_style_token
from instlib.style.transfer import adain, stylize, stylize_images

__all__ = [
    "BUILDERS", "DEFAULT_IMAGE_ENCODER", "DEFAULT_MODEL", "Fidelity", "ImageFilter", "SAMPLERS", "StyleComponents", "TILINGS",
    "StyleToken",
    "StyleTokenBlock", "TokenConfig", "PriorConfig", "TokenTrainingConfig", "TransferConfig", "adain", "filter_by_fidelity", "image_seed", "load_components",
    "load_token", "load_tokens", "measure_fidelity", "measure_folder", "pair_styles", "save_components", "save_token",
    "stylize", "stylize_images", "train_category_tokens", "train_style_token", "transfer_folder",
]
