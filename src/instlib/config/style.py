"""InST settings: the offline diffusion prior, style-token training, and the transfer.

Names chosen from a registry of :mod:`instlib.style` (tilings, training geometries) are listed here so
that a configuration is checked when it is made; a test keeps them in step with the registries.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from instlib.config.base import AUTO, Config, one_of

TILINGS = ("blend", "grid")  # instlib.style.tiling.TILINGS
GEOMETRIES = ("resize", "center-crop")  # instlib.style.train.GEOMETRIES
SAMPLERS = ("ddim", "dpmpp", "unipc")  # instlib.style.samplers.SAMPLERS
INVERSIONS = ("stochastic", "noise")
CONDITIONS = ("token", "none", "another")

#: Transfer settings that come as a set, by name. ``reference``: the authors' InST on SD v1.4 (512 px tiles,
#: 50-step DDIM grid, guidance 10). ``prior``: the offline prior's fast path: the whole image in one pass
#: per step (tiles above ``max_pixels``), DDIM on a 20-step grid (14 steps at strength 0.7) and no guidance,
#: chosen by measurement (book/method.md): the multistep solvers (DPM-Solver++, UniPC) end on fully denoised,
#: too clean images a classifier tells from real ones, and the prior's token has no measurable effect, so the
#: unconditional half of every step would double the cost for nothing.
TRANSFER_PRESETS: dict[str, dict[str, Any]] = {
    "reference": {"resolution": 512, "steps": 50, "guidance": 10.0, "sampler": "ddim"},
    "prior": {"resolution": AUTO, "steps": 20, "guidance": 1.0, "sampler": "ddim"},
}
#: The preset ``preset="auto"`` takes, by kind of model (``instlib.style.transfer.model_kind``).
MODEL_PRESETS: dict[str, str] = {"sd": "reference", "prior": "prior"}
PRESET_FIELDS: tuple[str, ...] = tuple(TRANSFER_PRESETS["reference"])


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
    """One InST transfer (:mod:`instlib.style.transfer`). Fields left at ``None`` come from ``preset``; with the
    default ``preset="auto"`` from the model's preset (:data:`MODEL_PRESETS`), filled in when the model is known
    (:meth:`for_model`): the reference's values on Stable Diffusion, the fast path on an offline prior."""

    preset: str = AUTO
    """Settings that come as a set: reference (SD v1.4's InST), prior (whole image, DDIM 20, no guidance), or
    auto (default: the model's, prior for an offline prior, else reference)."""
    strength: float = Field(0.7, gt=0, le=1)
    """Share of the diffusion run; more = more style, less structure."""
    steps: int | None = Field(None, ge=1)
    """Sampler grid size (strength x steps are run); default from the preset (reference 50, prior 20)."""
    sampler: str | None = None
    """Decoding sampler: ddim (the reference's, eta 0), dpmpp (DPM-Solver++ 2M) or unipc; default from the preset."""
    guidance: float | None = None
    """Classifier-free guidance scale; 1 skips the unconditional pass; default from the preset (10, prior 1)."""
    adain: bool = True
    """Latent AdaIN of content to style."""
    inversion: str = "stochastic"
    """stochastic (UNet-predicted noise) or noise (plain img2img)."""
    condition: str = "token"
    """What the prompt carries: token (the style image's), none (the empty prompt: the unconditional prediction
    alone) or another (the token of the next content image's style image, in name order): none and another
    are the controls that show what the token adds."""
    reference_timesteps: bool = False
    """Encode at int(strength x 1000) but decode from the DDIM grid, as the reference."""
    resolution: int | Literal["auto"] | None = None
    """Square tile the networks see, in pixels, or auto: the whole image in one pass (attention in windows of the
    model's training size) when it fits max_pixels, else tiles that do; default from the preset (512, prior
    auto). Outputs keep the content's size and pixel grid."""
    max_pixels: int = Field(1024 * 1024, ge=64)
    """With resolution auto: the most pixels per image in one UNet pass (a memory budget); larger images are
    tiled."""
    tiling: str = "blend"
    """blend (overlapping tiles merged every step) or grid (non-overlapping tiles, as the reference's data)."""
    tile_overlap: float = Field(0.25, ge=0, lt=1)
    """Share of a tile its neighbour covers (blend tiling)."""
    seed: int = 42
    """Random seed; each image's randomness depends only on it and the image's name."""

    @model_validator(mode="before")
    @classmethod
    def _from_preset(cls, values: Any) -> Any:
        if not isinstance(values, dict) or values.get("preset", AUTO) == AUTO:
            return values
        preset = TRANSFER_PRESETS[one_of(values["preset"], TRANSFER_PRESETS, "preset")]
        return {**values, **{k: v for k, v in preset.items() if values.get(k) is None}}

    @field_validator("preset")
    @classmethod
    def _preset(cls, value: str) -> str:
        return one_of(value, (AUTO, *TRANSFER_PRESETS), "preset")

    @field_validator("resolution", mode="before")
    @classmethod
    def _resolution(cls, value: Any) -> Any:
        if value is None or value == AUTO:
            return value
        try:
            value = int(value)
        except (TypeError, ValueError):
            raise ValueError(f"resolution must be a number of pixels or '{AUTO}', got {value!r}") from None
        if value < 8:
            raise ValueError(f"resolution must be at least 8 pixels, got {value}")
        return value

    @field_validator("sampler")
    @classmethod
    def _sampler(cls, value: str | None) -> str | None:
        return value if value is None else one_of(value, SAMPLERS, "sampler")

    @field_validator("inversion")
    @classmethod
    def _inversion(cls, value: str) -> str:
        return one_of(value, INVERSIONS, "inversion")

    @field_validator("condition")
    @classmethod
    def _condition(cls, value: str) -> str:
        return one_of(value, CONDITIONS, "condition")

    @field_validator("tiling")
    @classmethod
    def _tiling(cls, value: str) -> str:
        return one_of(value, TILINGS, "tiling")

    @model_validator(mode="after")
    def _some_step(self) -> TransferConfig:
        if self.steps is not None and int(self.steps * self.strength) < 1:
            raise ValueError(f"strength x steps must give at least one sampler step, got {self.strength} x {self.steps}")
        return self

    def for_model(self, kind: str) -> TransferConfig:
        """These settings with the fields left at ``None`` filled from the preset of a model of ``kind``
        (:data:`MODEL_PRESETS`); a set preset keeps its own. The result has every field set."""
        preset = MODEL_PRESETS[kind] if self.preset == AUTO else self.preset
        return TransferConfig(**{**self.model_dump(), "preset": preset})

    @property
    def resolved(self) -> bool:
        """Whether every field a preset decides is set."""
        return all(getattr(self, k) is not None for k in PRESET_FIELDS)
