"""InST settings: the offline diffusion prior, style-token training, and the transfer.

Names chosen from a registry of :mod:`instlib.style` (tilings, training geometries) are listed here so
that a configuration is checked when it is made; a test keeps them in step with the registries.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from instlib.config.base import Config, one_of

TILINGS = ("blend", "grid")  # instlib.style.tiling.TILINGS
GEOMETRIES = ("resize", "center-crop")  # instlib.style.train.GEOMETRIES
INVERSIONS = ("stochastic", "noise")


class PriorConfig(Config):
    """A diffusion prior trained from scratch (:mod:`instlib.style.prior`). The defaults train on 10 images of
    768 x 1024 in minutes on 2 CPU cores."""

    steps: int = Field(600, ge=1)
    """Optimiser steps."""
    resolution: int = 64
    """Square training crop size in pixels (it then runs fully convolutionally at any multiple of 8)."""
    batch_size: int = Field(16, ge=1)
    """Crops per step."""
    lr: float = Field(1e-3, gt=0)
    """AdamW learning rate."""
    seed: int = 0
    """Random seed of the initialisation and of every step's crops, noise and timesteps."""
    channels: tuple[int, ...] = (16, 32, 64, 64)
    """UNet channels per level."""
    width: int = Field(32, ge=1)
    """Width of the text and image encoders and of the style token."""
    cond_dropout: float = Field(0.15, ge=0, lt=1)
    """Share of samples conditioned on the empty prompt (the branch classifier-free guidance needs)."""
    checkpoint_every: int = Field(100, ge=1)
    """Save a resumable checkpoint every this many steps."""

    @model_validator(mode="after")
    def _resolution(self) -> PriorConfig:
        factor = 2 ** (len(self.channels) - 1)
        if self.resolution < 8 or self.resolution % factor:
            raise ValueError(f"resolution must be at least 8 and a multiple of {factor}, got {self.resolution}")
        return self


class TokenTrainingConfig(Config):
    """Training one style token (:mod:`instlib.style.train`); the reference's values are the defaults."""

    steps: int = Field(ge=1)
    """Optimiser steps (the paper's tokens: about 1000)."""
    lr: float = Field(1e-4, gt=0)
    """AdamW learning rate."""
    batch_size: int = Field(1, ge=1)
    """Images per step (per process)."""
    resolution: int = 512
    """Square training size in pixels."""
    seed: int = 0
    """Random seed; the same seed gives the same token."""
    checkpoint_every: int = Field(500, ge=1)
    """Save a resumable checkpoint every this many steps."""
    flip_p: float = Field(0.5, ge=0, le=1)
    """Chance of a horizontal flip of the style image."""
    geometry: str = "resize"
    """resize (the whole image, as the reference) or center-crop."""
    reference_clip_input: bool = False
    """Feed CLIP the reference's uint8 cast of the [-1, 1] image (a near-binary mask), as the authors' code;
    recorded in the token."""

    @field_validator("geometry")
    @classmethod
    def _geometry(cls, value: str) -> str:
        return one_of(value, GEOMETRIES, "geometry")


class TransferConfig(Config):
    """One InST transfer (:mod:`instlib.style.transfer`); the reference's values are the defaults, at 512 x 512."""

    strength: float = Field(0.7, gt=0, le=1)
    """Share of the diffusion run; more = more style, less structure."""
    steps: int = Field(50, ge=1)
    """DDIM grid size (strength x steps are run)."""
    guidance: float = 10.0
    """Classifier-free guidance scale."""
    adain: bool = True
    """Latent AdaIN of content to style."""
    inversion: str = "stochastic"
    """stochastic (UNet-predicted noise) or noise (plain img2img)."""
    reference_timesteps: bool = False
    """Encode at int(strength x 1000) but decode from the DDIM grid, as the reference."""
    resolution: int = Field(512, ge=8)
    """Square tile the networks see, in pixels; outputs keep the content's size and pixel grid."""
    tiling: str = "blend"
    """blend (overlapping tiles merged every step) or grid (non-overlapping tiles, as the reference's data)."""
    tile_overlap: float = Field(0.25, ge=0, lt=1)
    """Share of a tile its neighbour covers (blend tiling)."""
    seed: int = 42
    """Random seed; each image's randomness depends only on it and the image's name."""

    @field_validator("inversion")
    @classmethod
    def _inversion(cls, value: str) -> str:
        return one_of(value, INVERSIONS, "inversion")

    @field_validator("tiling")
    @classmethod
    def _tiling(cls, value: str) -> str:
        return one_of(value, TILINGS, "tiling")

    @model_validator(mode="after")
    def _some_step(self) -> TransferConfig:
        if int(self.steps * self.strength) < 1:
            raise ValueError(f"strength x steps must give at least one DDIM step, got {self.strength} x {self.steps}")
        return self
