"""Counting settings: one run (:class:`TrainConfig`), the cross-validation grid (:class:`GridConfig`), recipes.

Training recipes are the settings that come as a set, by name (:data:`RECIPES`):

- ``authors``: what the authors' counting code does (``training/main.py``, ``training/utils.py``):
  EfficientNet-B0 with its default dropout 0.2 before the head and stochastic depth 0.2 (timm's
  ``drop_path_rate`` scales per block as torchvision's does), Adam lr 1e-4 without weight decay (the
  config's value is never read), ``StepLR(step_size=10, gamma=0.1)`` stepped per epoch over 25 epochs,
  their fixed IDCIA normalisation (mean 0.0414, std 0.0203), the default head initialisation, batch 8,
  200 x 200 crops, an epoch = one pass over the images, the pooled regression head (their code has no
  density output, nor DACS), and each stage keeps the epoch with the lowest validation MAE.
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

A :class:`TrainConfig` takes every setting of its recipe that it does not set itself.

The names of heads, mixing strategies, normalisations, schedules and epoch choices are listed here,
so that a configuration is checked when it is made; :mod:`instlib.count` registers what each name
does under the same names (a test keeps the two in step).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from instlib.config.base import AUTO, Config, one_of, positive_or_auto

HEADS = ("regression", "density")  # instlib.count.model.HEADS
MIXES = ("none", "cutmix", "dacs")  # instlib.count.mix.MIXES
NORMS = ("data", "idcia", "imagenet")  # data: statistics of the real training images; else instlib.count.spec.NORMS
SCHEDULES = ("poly", "cosine", "step", "steplr10", "constant")  # instlib.count.schedules.SCHEDULES
KEEP = ("best", "last")  # instlib.count.schedules.KEEP
#: How the real images are split: ``stratified`` draws count-stratified parts (folds, validation
#: images); ``official`` takes the ``split`` column (train / val / test) of the real folder's manifest.
SPLITS = ("stratified", "official")
AUTO_SIGMA = AUTO
SCRATCH_ENCODER = "unet16"  # model="auto" without ImageNet weights
#: sigma="auto" is this fraction of the cells' measured blob scale: on hard simulated replicates, targets of
#: half the blob scale counted better than those of the whole blob scale (and twice it worse); book/method.md.
AUTO_SIGMA_FRACTION = 0.5

# lr 1e-3 for instlib: the density decoder (and an encoder trained from scratch) starts from random weights.
RECIPES: dict[str, dict[str, Any]] = {
    "authors": dict(epochs=25, finetune_epochs=25, lr=1e-4, weight_decay=0.0, schedule="steplr10", norm="idcia",
                    batch_size=8, crop_size=200, drop_rate=0.2, drop_path_rate=0.2, mean_count_bias=False,
                    head="regression", density=False, crops_per_epoch=0, keep="best", val_every=1),
    "instlib": dict(epochs=50, finetune_epochs=50, lr=1e-3, weight_decay=1e-5, schedule="poly", norm="data",
                    batch_size=8, crop_size=200, drop_rate=0.0, drop_path_rate=0.0, mean_count_bias=True,
                    head="density", density=False, crops_per_epoch=128, keep="last", val_every=5),
}
#: The settings a recipe decides (the same for every recipe).
RECIPE_FIELDS: tuple[str, ...] = tuple(RECIPES["instlib"])


def recipe_settings(name: str) -> dict[str, Any]:
    """The settings of the recipe registered as ``name``."""
    return dict(RECIPES[one_of(name, RECIPES, "recipe")])


class TrainConfig(Config):
    """Settings of one counting run. Fields left at ``None`` come from ``recipe``."""

    model: str = AUTO
    """Encoder: a timm backbone (test_efficientnet for quick runs) or a from-scratch U-Net (unet16, unet32); auto:
    efficientnet_b0 with ImageNet weights, unet16 from scratch."""
    pretrained: bool = True
    """Start from ImageNet weights (cached, or downloaded when online)."""
    recipe: str = "instlib"
    """Training recipe: authors (the authors' code) or instlib (this project's defaults)."""
    epochs: int | None = Field(None, ge=1)
    """Epochs of pre-training (of training when there is no fine-tuning); default: the recipe's."""
    finetune_epochs: int | None = Field(None, ge=0)
    """Epochs of fine-tuning on the real images; default: the recipe's."""
    lr: float | None = Field(None, gt=0)
    """Adam learning rate; default: the recipe's."""
    weight_decay: float | None = Field(None, ge=0)
    """Adam weight decay; default: the recipe's."""
    batch_size: int | None = Field(None, ge=1)
    """Crops per training batch; default: the recipe's."""
    crop_size: int | None = Field(None, ge=1)
    """Crop (and tile) size in pixels; default: the recipe's."""
    seed: int = 42
    """Random seed of initialisation, data order and augmentation."""
    mix: str = "none"
    """Mix pre-training batches with the target-domain images: none, cutmix or dacs."""
    mix_prob: float | None = Field(None, ge=0, le=1)
    """Chance that a sample gets a rectangle; default: the strategy's."""
    norm: str | None = None
    """Normalisation: data (the real training images' statistics), idcia or imagenet; default: the recipe's."""
    schedule: str | None = None
    """Learning-rate schedule of each stage: poly, step, steplr10 or constant; default: the recipe's."""
    drop_rate: float | None = Field(None, ge=0, lt=1)
    """Dropout before the count head; default: the recipe's."""
    drop_path_rate: float | None = Field(None, ge=0, lt=1)
    """Stochastic depth of the backbone; default: the recipe's."""
    mean_count_bias: bool | None = None
    """Start the head's bias at the mean crop count; default: the recipe's."""
    split: str = "stratified"
    """stratified (count-stratified folds and validation images) or official (the real folder's manifest
    column 'split': train/val/test)."""
    zero_keep: float = Field(0.25, ge=0, le=1)
    """Chance that a training crop without cells is kept."""
    point_crops: float = Field(0.0, ge=0, le=1)
    """Share of training crops centred on a random annotated cell (dense clumps seen as often as their cells)."""
    crops_per_epoch: int | None = Field(None, ge=0)
    """Random crops per epoch, however many images there are; 0: passes over the images; default: the
    recipe's."""
    crops_per_image: int = Field(1, ge=1)
    """Random crops per image and epoch when crops_per_epoch is 0."""
    keep: str | None = None
    """Epoch each stage keeps: best (lowest validation MAE, the authors') or last; default: the recipe's."""
    val_every: int | None = Field(None, ge=1)
    """Validate every this many epochs (and after the last one); keep=best chooses among the validated
    epochs; default: the recipe's."""
    ema: float = Field(0.0, ge=0, lt=1)
    """Decay per step of an exponential moving average of the weights, which is then validated and kept
    instead of the raw weights (e.g. 0.99); 0: off."""
    max_steps: int | None = Field(None, ge=1)
    """Cap on steps per epoch (quick runs)."""
    max_images: int | None = Field(None, ge=1)
    """Use at most this many images of the training folders (a seeded subset)."""
    val_fraction: float = Field(0.2, gt=0, lt=1)
    """Share of the real labelled images held out to validate every epoch."""
    head: str | None = None
    """Counting head: regression (the paper's pooled count) or density (U-Net density map); default: the
    recipe's."""
    density: bool | None = None
    """Regression head only: add the 1x1 density helper and its loss, in every run alike (dacs with the
    regression head needs it); default: the recipe's."""
    sigma: float | Literal["auto"] = AUTO_SIGMA
    """Density head: std in pixels of the Gaussian target around each point, or auto: half the cells' blob scale
    (diameter / 5.7), measured on the real training images."""
    intensity_percentile: float | None = Field(None, gt=0, le=100)
    """Scale each image so this percentile of its pixels is 255, e.g. 99.9 (default: as stored)."""
    jitter: bool = True
    """Colour jitter (brightness/contrast/saturation 0.2, hue 0.1)."""
    intensity_augment: bool = False
    """Per-crop gain (0.37x to 2.7x), gamma, blur and sensor noise, as exposure and focus vary between images."""
    count_scales: tuple[int, ...] = Field((1,), min_length=1)
    """Density head: the crop-count term of the loss also on a grid of n x n parts of each crop, for each n."""
    count_weight: float = Field(0.01, ge=0)
    """Density head: weight of the crop-count term (absolute error in cells) against the pixel MSE."""
    out_stride: int = Field(2, ge=1)
    """Density head: stride of the output map, one of the encoder's strides (2, 4, ...)."""
    eval_batch_size: int = Field(32, ge=1)
    """Crops per batch when validating and testing."""
    channels_last: bool = True
    """Channels-last memory layout (faster convolutions)."""
    amp: bool = True
    """Half-precision autocast on GPUs: bf16 from compute capability 8.0, fp16 below (fp32 when training without
    loss scaling)."""

    @property
    def backbone(self) -> str:
        """The encoder ``model`` names. ``auto``: from ImageNet weights EfficientNet-B0 (the paper's); from scratch
        ``unet16``, which on hard simulated images counted no worse at 0.6 of the time (book/method.md)."""
        if self.model != AUTO:
            return self.model
        return "efficientnet_b0" if self.pretrained else SCRATCH_ENCODER

    @model_validator(mode="before")
    @classmethod
    def _from_recipe(cls, values: Any) -> Any:
        if not isinstance(values, dict):
            return values
        recipe = recipe_settings(values.get("recipe") or "instlib")
        return {**values, **{k: v for k, v in recipe.items() if values.get(k) is None}}

    @field_validator("sigma", mode="before")
    @classmethod
    def _sigma(cls, value: Any) -> Any:
        return positive_or_auto(value, "sigma")

    @model_validator(mode="after")
    def _choices(self) -> TrainConfig:
        for value, choices, what in ((self.head, HEADS, "counting head"), (self.mix, MIXES, "mixing strategy"),
                                     (self.norm, NORMS, "normalisation"), (self.schedule, SCHEDULES, "schedule"),
                                     (self.keep, KEEP, "epoch choice"), (self.split, SPLITS, "split")):
            one_of(value, choices, what)
        if self.mix == "dacs" and not (self.head == "density" or self.density):
            # Switching a density loss on for the mixing runs alone would confound the comparison.
            raise ValueError(f"mix '{self.mix}' labels target images with the model's density: use head='density' "
                             "(--head density) or density=True (--density) for every run it is compared with, "
                             "so all train with the same loss")
        return self

    def updated(self, **changes: Any) -> TrainConfig:
        """A validated copy with ``changes`` (``None`` values ignored).

        A new ``recipe`` also brings its settings, except those this configuration had set to other
        values than its old recipe's and those in ``changes``.
        """
        changes = {k: v for k, v in changes.items() if v is not None}
        if changes.get("recipe", self.recipe) != self.recipe:
            follow = {k: None for k, v in RECIPES[self.recipe].items() if getattr(self, k) == v}
            changes = {**follow, **changes}
        return TrainConfig(**{**self.model_dump(), **changes})


class GridConfig(Config):
    """The cross-validation grid: folds x training seeds x mixing variants (sources are folders, given apart)."""

    folds: int = Field(5, ge=2)
    """Folds, stratified by count (seed 42); ignored with the official split."""
    seeds: tuple[int, ...] = Field((42,), min_length=1)
    """Training seeds, e.g. 42,43,44; each varies initialisation, data order and augmentation together (the
    synthetic sources keep the seeds they were made with)."""
    mixes: tuple[str, ...] = Field(("none",), min_length=1)
    """Mixing variants to run: none, cutmix, dacs."""

    @field_validator("mixes")
    @classmethod
    def _mixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for m in value:
            one_of(m, MIXES, "mixing strategy")
        return value
