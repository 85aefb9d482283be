"""Synthesis settings: the hard-coded synthetic images (Syn-HC) of :mod:`instlib.data.synth`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from instlib.config.base import AUTO, Config, positive_or_auto

AUTO_CELL_SIZE = AUTO


class SynHCConfig(Config):
    """The generator's settings; the reference's values are the defaults (cell size 30 there)."""

    cell_size: float | Literal["auto"] = 15.0
    """Cell size cs: semi-axes ~ U[0.4 cs, 0.6 cs); 'auto' (drawing from real points): measured on the real
    images at their points."""
    seed: int = 0
    """Random seed; each image's bytes depend only on it and the image's name."""
    background_mean: tuple[float, float] = (10.0, 30.0)
    """Range of the background's mean grey level (drawn per image)."""
    background_std: float = Field(5.0, ge=0)
    """Std of the background's Gaussian noise."""
    axis_fraction: tuple[float, float] = (0.4, 0.6)
    """Range of an ellipse's semi-axes, as fractions of the cell size."""
    alpha: tuple[float, float] = (0.8, 1.2)
    """Range of the global contrast factor."""
    beta: tuple[float, float] = (-20.0, 20.0)
    """Range of the global brightness offset."""

    @field_validator("cell_size", mode="before")
    @classmethod
    def _cell_size(cls, value: Any) -> Any:
        return positive_or_auto(value, "cell size")
