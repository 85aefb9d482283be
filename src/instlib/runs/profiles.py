"""Run profiles: every setting a notebook needs, as data, for ``smoke``, ``demo`` and ``paper``.

A :class:`Profile` is a frozen dataclass; :data:`PROFILES` holds the three defined in DESIGN.md:

========  ==========================  ==========================================  =========================
profile   where                       models                                      data
========  ==========================  ==========================================  =========================
smoke     CI, tests, any CPU          tiny random diffusion model, tiny backbone  simulator, 64 px
demo      any laptop, offline         cached SD v1.4 if present, else tiny        simulator (or a folder)
paper     GPU + internet (Colab)      SD v1.4, CLIP ViT-L/14, EfficientNet-B0     IDCIA
========  ==========================  ==========================================  =========================

Notebooks declare, in their ``parameters`` cell, the profile fields they use plus ``profile`` and
``run_dir``; ``instlib reproduce`` passes them with papermill. Any field can be overridden
(``instlib reproduce --set diffusion_model=/path/to/model``), which is how tests point the paper
profile's hub ids at locally saved tiny models. Unknown profiles or fields raise
:class:`~instlib.errors.InstlibError` listing the valid ones.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, fields
from typing import Any, Literal

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError

from instlib.errors import InstlibError

#: Model names :func:`instlib.style.load_components` builds with random weights (no scientific value).
RANDOM_MODELS = ("tiny", "sd14-random")
PRIOR = "prior"  # placeholder for the diffusion prior a run trains on its own real images
#: The diffusion model of the paper and the id the ``demo`` profile looks for in the local cache.
SD14 = "CompVis/stable-diffusion-v1-4"
CLIP_L14 = "openai/clip-vit-large-patch14"


@dataclass(frozen=True)
class Profile:
    """Everything a run needs besides code. Field names are the notebooks' parameter names."""

    name: str
    description: str
    budget: str
    # -- data ---------------------------------------------------------------------------------
    real_data: str = "simulate"
    """``simulate`` (offline simulator), ``idcia`` (download with checksums) or a folder-format path."""
    n_real: int = 24
    """Simulator: images to make. IDCIA or a folder: at most this many, spread over the counts (0 = all)."""
    image_size: int = 128
    """Simulator canvas, square (pixels)."""
    cells: tuple[int, int] = (5, 60)
    """Simulator: cells per image, lowest and highest."""
    sim_color: str = "dapi"
    cell_size: int | Literal["auto"] = 15
    """Syn-HC cell size ``cs`` (semi-axes ~ U[0.4 cs, 0.6 cs)), or ``auto``: measured from the real images
    at their points (the blob scale there; instlib.data.cellsize)."""
    gradual_steps: int = 5
    """Images in the gradual-count series made from one real coordinate list."""
    data_seed: int = 0
    # -- style (InST) -------------------------------------------------------------------------
    diffusion_model: str = "tiny"
    """``tiny``, ``sd14-random`` (random weights), a hub id, a local folder, ``prior`` (a diffusion prior
    trained in this run on its real images; notebook 02 replaces it by the prior's folder), or ``auto``:
    the cached SD v1.4 when present, else ``prior``."""
    image_encoder: str | None = None
    """CLIP image encoder id or folder; None = the one that goes with ``diffusion_model``."""
    prior_steps: int = 600
    """Diffusion prior (``diffusion_model="prior"``): optimiser steps."""
    prior_resolution: int = 64
    """Diffusion prior: square training crop size (pixels); it runs fully convolutionally on ``style_resolution`` tiles."""
    prior_batch_size: int = 16
    """Diffusion prior: crops per step."""
    density_categories: tuple[tuple[int, int], ...] = ((0, 100_000),)
    """One style token per category of cell counts ``lo <= count <= hi`` (categories without real images are skipped)."""
    style_steps: int = 100
    style_lr: float = 1e-4
    style_resolution: int = 64
    transfer_strength: float = 0.7
    transfer_steps: int = 50
    guidance: float = 10.0
    strength_sweep: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
    n_sweep: int = 2
    realism_images: int = 12
    """Images restyled per strength of the sweep (the realism and fidelity curves; galleries show ``n_sweep``)."""
    """Images shown in the strength sweep and the ablation figures."""
    style_seed: int = 42
    reference_clip_input: bool = False
    """Style tokens see the authors' CLIP input (a near-binary mask of the image) instead of the image."""
    stain: str | None = None
    """Syn-HC is drawn from, tokens are trained on and InST is styled with real images of this stain only
    (the manifest's ``stain`` column); the counting models still see every real image."""
    style_names: str | None = None
    """Name glob with the same role as ``stain``, for folders whose manifest has no stain column."""
    transfer_tiling: str = "blend"
    """``blend`` (overlapping tiles at the content's own scale) or ``grid`` (the authors' non-overlapping tiles)."""
    # -- counting -----------------------------------------------------------------------------
    count_recipe: str = "instlib"
    """``instlib`` (density-map counter, this project's defaults) or ``authors`` (the authors' counting code:
    the pooled regressor, dropout and drop-path 0.2, StepLR, IDCIA normalisation); see instlib.count.recipes."""
    count_head: str | None = None
    """``density`` or ``regression``; None: the recipe's."""
    count_split: str = "stratified"
    """``stratified`` (k-fold by count) or ``official`` (the real folder's own train / val / test split)."""
    count_model: str = "efficientnet_b0"
    """timm model name."""
    count_pretrained: bool = False
    """ImageNet weights for ``count_model`` (downloaded through timm)."""
    epochs: int = 2
    """Pre-training epochs on the source."""
    finetune_epochs: int = 2
    count_lr: float | None = None
    """None: the recipe's (1e-3 for instlib, 1e-4 for authors)."""
    crops_per_epoch: int | None = None
    """Random crops per epoch; 0 = one pass over the images; None: the recipe's."""
    count_batch_size: int = 8
    crop_size: int = 64
    folds: int = 5
    seeds: tuple[int, ...] = (42,)
    mixes: tuple[str, ...] = ("none", "cutmix", "dacs")
    """Mixing variants compared in notebook 05."""
    cell200: str | None = None
    """Cell200-s as a folder-format path (``instlib data import CELL200/ --format dots``), or None to leave
    it out: it has no stable download address."""
    # -- execution ----------------------------------------------------------------------------
    device: str | None = None
    """``cpu``, ``cuda``, ... ; None picks the GPU when there is one."""
    workers: int = 1
    """Processes for Syn-HC generation (the output does not depend on it)."""

    # ------------------------------------------------------------------------------------------
    @classmethod
    def field_names(cls) -> list[str]:
        """The names users can set (everything but ``name``, ``description``, ``budget``)."""
        return [f.name for f in fields(cls) if f.name not in _META]

    def replace(self, **overrides: Any) -> "Profile":
        """A copy with some fields changed; values are checked and converted to the field's type.

        ``None`` values are ignored (so a notebook can pass every parameter it declares), strings
        are parsed as YAML (so ``"false"``, ``"3"``, ``"[0.5, 0.7]"`` work from the command line).
        """
        known = set(self.field_names())
        unknown = sorted(k for k in overrides if k not in known)
        if unknown:
            raise InstlibError(
                f"unknown profile parameter(s) {', '.join(unknown)}; valid ones: {', '.join(sorted(known))}")
        hints = typing.get_type_hints(Profile)
        changes = {k: _coerce(k, v, hints[k]) for k, v in overrides.items() if v is not None}
        return dataclasses.replace(self, **changes)

    def parameters(self, names: list[str] | None = None) -> dict[str, Any]:
        """Field values as papermill parameters (JSON-like: tuples become lists)."""
        names = self.field_names() if names is None else names
        return {n: _plain(getattr(self, n)) for n in names}

    @property
    def random_diffusion(self) -> bool:
        """True when the diffusion model has random weights (its images carry no scientific value)."""
        return self.diffusion_model in RANDOM_MODELS

    @property
    def simulated_data(self) -> bool:
        return self.real_data == "simulate"

    def to_yaml(self) -> str:
        return yaml.safe_dump({"profile": self.name, **self.parameters()}, sort_keys=False)


_META = {"name", "description", "budget"}


def _plain(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` converted to field ``name``'s type ``hint`` (pydantic's lax rules), or a clear error."""
    if isinstance(value, str):
        value = _from_text(value, hint)
    if typing.get_origin(hint) is tuple and isinstance(value, (str, int, float)):
        value = [value]  # one value for a list field, e.g. --set mixes=none
    try:
        return _adapter(hint).validate_python(value)
    except ValidationError:
        raise InstlibError(f"profile parameter {name}: {value!r} is not a valid {_type_name(hint)}") from None


#: Texts that mean "no value" for an optional field (YAML's own nulls plus Python's spelling).
_NULL_TEXT = ("null", "none", "~", "")


def _from_text(text: str, hint: Any) -> Any:
    """Command-line text as a value: YAML (``"false"``, ``"3"``, ``"[0.5, 0.7]"``), except that a
    string field keeps the text as written (a path such as ``/data/2024`` stays a string)."""
    args = typing.get_args(hint)
    if type(None) in args and text.strip().lower() in _NULL_TEXT:
        return None
    if hint is str or (str in args and typing.get_origin(hint) is not tuple):  # str or str | None
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # the type check below reports it


@functools.cache
def _adapter(hint: Any) -> TypeAdapter:
    # Numbers are accepted for string fields (a folder called 2024 written without quotes).
    return TypeAdapter(hint, config=ConfigDict(coerce_numbers_to_str=True))


def _type_name(hint: Any) -> str:
    """``int``, ``int or 'auto'``, ``list[float]``: the type of a field in words."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is Literal:
        return " or ".join(repr(a) for a in args)
    if args and type(None) not in args and typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in args)
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


SMOKE = Profile(
    name="smoke",
    description="CI and tests: a diffusion prior trained for a few seconds, tiny counting models and tiny "
                "simulated images; checks that everything runs, measures nothing.",
    budget="the whole reproduction in under 5 minutes on 2 CPU cores, offline",
    real_data="simulate", n_real=12, image_size=64, cells=(3, 30), cell_size="auto", gradual_steps=4,
    diffusion_model="prior", prior_steps=30, prior_resolution=32, prior_batch_size=8, image_encoder=None,
    density_categories=((0, 14), (15, 100_000)), style_steps=20, style_resolution=64, transfer_strength=0.7,
    transfer_steps=10, guidance=10.0,
    strength_sweep=(0.3, 0.7, 0.9), n_sweep=2, realism_images=6,
    count_recipe="instlib", count_model="test_efficientnet", count_pretrained=False, epochs=1, finetune_epochs=1,
    crops_per_epoch=16, count_batch_size=8, crop_size=32, folds=2, seeds=(42,), mixes=("none", "cutmix", "dacs"),
    cell200=None, device="cpu",
)

DEMO = Profile(
    name="demo",
    description="A laptop, offline: the cached Stable Diffusion v1.4 when there is one (else a diffusion "
                "prior trained in the run on its real images), simulated fluorescence images as the real "
                "domain, an EfficientNet-B0 density-map counter trained from scratch in 3-fold "
                "cross-validation. Shows the method and its figures; its numbers are not the paper's.",
    budget="under 20 minutes on 2 CPU cores, offline",
    real_data="simulate", n_real=36, image_size=128, cells=(5, 80), cell_size="auto", gradual_steps=6,
    diffusion_model="auto", prior_steps=450, image_encoder=None, density_categories=((0, 29), (30, 100_000)),
    style_steps=50, style_resolution=128, transfer_strength=0.7, transfer_steps=16, guidance=10.0,
    strength_sweep=(0.3, 0.5, 0.7, 0.9), n_sweep=2, realism_images=12,
    count_recipe="instlib", count_model="efficientnet_b0", count_pretrained=False, epochs=24, finetune_epochs=5,
    crops_per_epoch=80, count_batch_size=8, crop_size=64, folds=3, seeds=(42,), mixes=("none", "cutmix", "dacs"),
    cell200=None, device=None,
)

PAPER = Profile(
    name="paper",
    description="The paper's setting: Stable Diffusion v1.4 with the CLIP ViT-L/14 image encoder and the "
                "authors' CLIP input, DAPI images, ImageNet EfficientNet-B0 regression trained with the "
                "authors' recipe on IDCIA's official split; mixing is the authors' 'DACS with CutMix' "
                "(CutMix; DACS with pseudo-labels needs a density output: --set count_head=density). "
                "Needs a GPU and internet.",
    budget="hours on one GPU",
    real_data="idcia", n_real=0, image_size=800, cells=(1, 300), cell_size=15, gradual_steps=10,
    diffusion_model=SD14, image_encoder=CLIP_L14,
    density_categories=((0, 49), (50, 149), (150, 100_000)),
    style_steps=1000, style_resolution=512, transfer_strength=0.7, transfer_steps=50, guidance=10.0,
    strength_sweep=(0.3, 0.5, 0.7, 0.9), n_sweep=4, realism_images=40, reference_clip_input=True, stain="DAPI",
    count_recipe="authors", count_split="official", count_model="efficientnet_b0", count_pretrained=True,
    epochs=25, finetune_epochs=25, count_batch_size=8, crop_size=200, folds=5, seeds=(42,),
    mixes=("none", "cutmix"),
    cell200=None, device=None,
)

PROFILES: dict[str, Profile] = {p.name: p for p in (SMOKE, DEMO, PAPER)}


def get_profile(name: str | Profile, **overrides: Any) -> Profile:
    """The profile called ``name`` with ``overrides`` applied (``None`` values ignored)."""
    if isinstance(name, Profile):
        base = name
    else:
        try:
            base = PROFILES[name]
        except (KeyError, TypeError):
            raise InstlibError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}") from None
    return base.replace(**overrides)


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """``["key=value", ...]`` (from ``--set``) into a dict; values stay strings for :meth:`Profile.replace`."""
    out: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InstlibError(f"--set expects KEY=VALUE, got {item!r}; valid keys: {', '.join(Profile.field_names())}")
        out[key.strip()] = value.strip()
    return out


def cached_sd14(cache_dir: str | None = None) -> str | None:
    """The local folder of a cached Stable Diffusion v1.4 snapshot (with CLIP ViT-L/14 cached too),
    found without touching the network; None when either is missing."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover
        return None
    needed = [(SD14, f) for f in ("unet/config.json", "unet/diffusion_pytorch_model.safetensors",
                                  "vae/config.json", "text_encoder/config.json", "tokenizer/vocab.json")]
    needed.append((CLIP_L14, "config.json"))  # the image encoder the style token needs
    found = [try_to_load_from_cache(repo, f, cache_dir=cache_dir) for repo, f in needed]
    if all(isinstance(p, str) for p in found):
        from pathlib import Path

        return str(Path(found[0]).parent.parent)
    return None


def resolve_models(profile: Profile) -> Profile:
    """Resolve ``diffusion_model="auto"``: the cached SD v1.4 when present, else ``prior`` (trained in the run)."""
    if profile.diffusion_model != "auto":
        return profile
    local = cached_sd14()
    if local is None:
        return dataclasses.replace(profile, diffusion_model=PRIOR)
    return dataclasses.replace(profile, diffusion_model=SD14,
                               image_encoder=profile.image_encoder or CLIP_L14)
