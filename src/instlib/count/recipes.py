"""Training recipes: the settings that come as a set, by name.

- ``authors``: what the authors' counting code does (``training/main.py``, ``training/utils.py``):
  torchvision EfficientNet-B0 with its default dropout 0.2 before the head and stochastic depth 0.2
  (timm's ``drop_path_rate`` scales per block as torchvision's does), Adam lr 1e-4 without weight
  decay (the config's value is never read), ``StepLR(step_size=10, gamma=0.1)`` stepped per epoch
  over 25 epochs, their fixed IDCIA normalisation (mean 0.0414, std 0.0203), the default head
  initialisation, batch 8, 200 x 200 crops, an epoch = one pass over the images, the pooled
  regression head (their code has no density output, nor DACS), and each stage keeps the epoch
  with the lowest validation MAE.
- ``instlib``: this project's defaults: no dropout or drop-path, weight decay 1e-5, a poly schedule,
  the real training images' own statistics, the head's bias started at the mean crop count (the
  first MSE gradients are otherwise all offset), the density-map counter (U-Net decoder, Gaussian
  targets) in every run, so that DACS (which labels with the density) and the other mixing variants
  train alike, lr 1e-3 (its decoder starts from random weights), epochs of 128 random crops
  however many images there are (ten images and a thousand get the same number of steps), and
  each stage keeps its last epoch, where the poly schedule has brought the learning rate to zero.
  Picking the epoch of lowest validation MAE picks noise when the validation images are few: on
  two held-out 768 x 1024 images the MAE of consecutive epochs swings between 4 and 30 cells, and
  in runs on ten such images the picked epoch counted 20 test images with an MAE of 6.9-10.1 (whole-
  image or tile validation, with or without the count term), the last epoch 3.8-4.6.

A :class:`~instlib.count.train.TrainConfig` takes every field of its recipe that it does not set
itself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

from instlib.errors import InstlibError

# Learning-rate factor as a function of (epochs done, with fractions within an epoch; epochs of the stage).
SCHEDULES: dict[str, Callable[[float, int], float]] = {
    "poly": lambda done, total: (1.0 - done / total) ** 0.9,
    "step": lambda done, total: 0.1 ** math.floor(3 * done / total),  # x0.1 after each third of the stage
    "steplr10": lambda done, total: 0.1 ** (int(done) // 10),  # torch StepLR(10, 0.1), stepped per epoch
    "constant": lambda done, total: 1.0,
}

# Which epoch a stage keeps: whether a new epoch replaces the kept one, given (its validation MAE, the kept one's).
KEEP: dict[str, Callable[[float, float], bool]] = {
    "best": lambda mae, kept: mae < kept,  # the lowest validation MAE (the authors' min_loss)
    "last": lambda mae, kept: True,  # the last epoch; validation is recorded, not used to choose
}


@dataclass(frozen=True)
class Recipe:
    """Settings of a named recipe; each is also a :class:`~instlib.count.train.TrainConfig` field."""

    name: str
    epochs: int  # of each stage: pre-training (or training) and fine-tuning alike
    finetune_epochs: int
    lr: float
    weight_decay: float
    schedule: str
    norm: str  # data | a name of instlib.count.model.NORMS
    batch_size: int
    crop_size: int
    drop_rate: float  # dropout before the count head
    drop_path_rate: float  # stochastic depth of the backbone's blocks
    mean_count_bias: bool  # start the head's bias at the mean crop count (else the default init)
    head: str  # regression (pooled count) | density (U-Net density map); see instlib.count.model.HEADS
    density: bool  # regression head: the 1x1 density helper and its loss (dacs needs a density)
    crops_per_epoch: int  # random crops per epoch; 0 = one pass over the images
    keep: str  # the epoch each stage keeps: a key of KEEP


RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("authors", epochs=25, finetune_epochs=25, lr=1e-4, weight_decay=0.0, schedule="steplr10", norm="idcia",
           batch_size=8, crop_size=200, drop_rate=0.2, drop_path_rate=0.2, mean_count_bias=False, head="regression",
           density=False, crops_per_epoch=0, keep="best"),
    # lr 1e-3: the density decoder (and an encoder trained from scratch) starts from random weights.
    Recipe("instlib", epochs=50, finetune_epochs=50, lr=1e-3, weight_decay=1e-5, schedule="poly", norm="data",
           batch_size=8, crop_size=200, drop_rate=0.0, drop_path_rate=0.0, mean_count_bias=True, head="density",
           density=False, crops_per_epoch=128, keep="last"),
)}

#: The settings a recipe decides.
RECIPE_FIELDS: tuple[str, ...] = tuple(f.name for f in fields(Recipe) if f.name != "name")


def get_recipe(name: str) -> Recipe:
    """The recipe registered as ``name``."""
    if name not in RECIPES:
        raise InstlibError(f"unknown recipe '{name}'; choose one of {', '.join(RECIPES)}")
    return RECIPES[name]
