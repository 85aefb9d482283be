"""Run profiles: every setting a notebook needs, as data, for ``smoke``, ``demo`` and ``paper``.

A :class:`Profile` nests one settings object per stage (:mod:`instlib.config`) beside the run's data
and models; :data:`PROFILES` holds the three defined in DESIGN.md:

========  ==========================  ==========================================  =========================
profile   where                       models                                      data
========  ==========================  ==========================================  =========================
smoke     CI, tests, any CPU          a prior trained for seconds, tiny backbone  simulator, 64 px
demo      any laptop, offline         cached SD v1.4 if present, else a prior     simulator (or a folder)
paper     GPU + internet (Colab)      SD v1.4, CLIP ViT-L/14, EfficientNet-B0     IDCIA
========  ==========================  ==========================================  =========================

=========  ===========================================  ==========================================
section    what                                         settings object
=========  ===========================================  ==========================================
data       the real images and what is drawn from them  :class:`DataConfig`
synth      Syn-HC                                       :class:`~instlib.config.SynHCConfig`
prior      the offline diffusion prior                  :class:`~instlib.config.PriorConfig`
tokens     style-token training                         :class:`~instlib.config.TokenTrainingConfig`
transfer   InST transfer                                :class:`~instlib.config.TransferConfig`
sweep      notebook 3's strength sweep and realism      :class:`SweepConfig`
count      one counting run                             :class:`~instlib.config.TrainConfig`
cv         the cross-validation grid                    :class:`~instlib.config.GridConfig`
=========  ===========================================  ==========================================

Notebooks declare, in their ``parameters`` cell, the sections and top-level fields they use plus
``profile`` and ``run_dir``; ``instlib reproduce`` passes them with papermill (a section as a dict), and
a notebook reading a field it did not declare fails (:func:`declared_only`), so ``--set`` always reaches
it. Any setting can be overridden: ``--set count.epochs=3``, ``--set diffusion_model=/path/to/model``,
``--set 'cv.seeds=[1, 2]'`` (text is parsed as YAML, except for text fields). Unknown profiles or fields
raise :class:`~instlib.errors.InstlibError` listing the valid ones.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, PrivateAttr

from instlib.config import (Config, GridConfig, PriorConfig, SynHCConfig, TokenTrainingConfig, TrainConfig,
                            TransferConfig)
from instlib.config.base import SettingsError
from instlib.errors import InstlibError

#: Model names :func:`instlib.style.load_components` builds with random weights (no scientific value).
RANDOM_MODELS = ("tiny", "sd14-random")
PRIOR = "prior"  # placeholder for the diffusion prior a run trains on its own real images
#: The diffusion model of the paper and the id the ``demo`` profile looks for in the local cache.
SD14 = "CompVis/stable-diffusion-v1-4"
CLIP_L14 = "openai/clip-vit-large-patch14"


class DataConfig(Config):
    """The run's real images, and which of them the style stages draw from."""

    real: str = "simulate"
    """simulate (offline simulator), idcia (download with checksums) or a folder-format path."""
    n_real: int = Field(24, ge=0)
    """Simulator: images to make. IDCIA or a folder: at most this many, spread over the counts (0 = all)."""
    image_size: int = 128
    """Simulator canvas, square (pixels)."""
    cells: tuple[int, int] = (5, 60)
    """Simulator: cells per image, lowest and highest."""
    color: str = "dapi"
    """Simulator: gray, or dapi for a blue RGB rendering."""
    seed: int = 0
    """Simulator seed."""
    gradual_steps: int = Field(5, ge=1)
    """Images in the gradual-count series made from one real coordinate list."""
    stain: str | None = None
    """Tokens are trained on and InST is styled with real images of this stain only (the manifest's stain
    column), and Syn-HC is drawn from them unless synhc_from is all; the counting models still see every real
    image."""
    names: str | None = None
    """Name glob with the same role as stain, for folders whose manifest has no stain column."""
    synhc_from: Literal["selection", "all"] = "selection"
    """Real images Syn-HC is drawn from: selection (those of stain / names) or all (every stain's points, as the
    authors: an image drawn from a marker stain is styled with the image of that stain of the same field, else
    with the one of the nearest count)."""
    cell200: str | None = None
    """Cell200-s as a folder-format path (instlib data import CELL200/ --format dots), or None to leave it out:
    it has no stable download address."""


class SweepConfig(Config):
    """Notebook 3's look at the transfer: strengths restyled, images per strength, images shown."""

    strengths: tuple[float, ...] = (0.3, 0.5, 0.7, 0.9)
    """Transfer strengths of the sweep."""
    images: int = Field(12, ge=1)
    """Images restyled per strength (the realism and fidelity curves)."""
    shown: int = Field(2, ge=1)
    """Images shown in the strength sweep and the ablation figures."""


class Profile(Config):
    """Everything a run needs besides code. Top-level field and section names are the notebooks' parameters."""

    name: str
    description: str
    budget: str
    data: DataConfig = DataConfig()
    synth: SynHCConfig = SynHCConfig()
    diffusion_model: str = "tiny"
    """tiny, sd14-random (random weights), a hub id, a local folder, prior (a diffusion prior trained in this
    run on its real images; notebook 02 replaces it by the prior's folder), or auto: the cached SD v1.4 when
    present, else prior."""
    image_encoder: str | None = None
    """CLIP image encoder id or folder; None = the one that goes with diffusion_model."""
    prior: PriorConfig = PriorConfig()
    density_categories: tuple[tuple[int, int], ...] = ((0, 100_000),)
    """One style token per category of cell counts lo <= count <= hi (categories without real images are
    skipped)."""
    tokens: TokenTrainingConfig = TokenTrainingConfig(steps=100)
    transfer: TransferConfig = TransferConfig()
    sweep: SweepConfig = SweepConfig()
    count: TrainConfig = TrainConfig()
    cv: GridConfig = GridConfig()
    device: str | None = None
    """cpu, cuda, ...; None picks the GPU when there is one."""
    workers: int = Field(1, ge=1)
    """Processes for Syn-HC generation (the output does not depend on it)."""

    _declared: frozenset[str] | None = PrivateAttr(None)

    def __getattribute__(self, name: str) -> Any:
        if name in SETTINGS:
            declared = object.__getattribute__(self, "__pydantic_private__")["_declared"]
            if declared is not None and name not in declared:
                raise InstlibError(f"this notebook reads the profile's '{name}', which its parameters cell does not "
                                   f"declare: add the line `{name} = None` to it, so that the run's value reaches "
                                   "the notebook")
        return object.__getattribute__(self, name)

    @classmethod
    def field_names(cls) -> list[str]:
        """What users can set: top-level fields and ``section.field`` (everything but the three meta fields)."""
        names = []
        for name in SETTINGS:
            section = _section(name)
            names += [f"{name}.{f}" for f in section.model_fields] if section else [name]
        return names

    def parameters(self, names: list[str] | None = None) -> dict[str, Any]:
        """Top-level fields and sections as papermill parameters (JSON-like: a section is a dict)."""
        dumped = self.dump()
        return {n: dumped[n] for n in (names if names is not None else SETTINGS)}

    @property
    def random_diffusion(self) -> bool:
        """True when the diffusion model has random weights (its images carry no scientific value)."""
        return self.diffusion_model in RANDOM_MODELS

    @property
    def simulated_data(self) -> bool:
        return self.data.real == "simulate"

    def to_yaml(self) -> str:
        return yaml.safe_dump({"profile": self.name, **self.parameters()}, sort_keys=False, default_flow_style=None)


_META = ("name", "description", "budget")
#: The names users set (top-level fields and sections): everything but the three meta fields.
SETTINGS = tuple(n for n in Profile.model_fields if n not in _META)


def _section(name: str) -> type[Config] | None:
    """The settings class of section ``name``, or None for a plain top-level field."""
    hint = Profile.model_fields[name].annotation
    return hint if isinstance(hint, type) and issubclass(hint, Config) else None


def _settable(key: str) -> bool:
    """Whether ``key`` names a top-level field, a section, or a section's field."""
    name, dot, field = key.partition(".")
    if name not in SETTINGS:
        return False
    section = _section(name)
    return not dot or (section is not None and field in section.model_fields)


def declared_only(profile: Profile, names: frozenset[str] | set[str]) -> Profile:
    """``profile``, raising on any read of a setting not in ``names`` (a notebook's declared parameters)."""
    copy = profile.model_copy()
    copy._declared = frozenset(names)
    return copy


def apply_overrides(profile: Profile, overrides: dict[str, Any]) -> Profile:
    """``profile`` with ``overrides`` applied: ``field``, ``section.field`` or a whole ``section`` (a dict).

    ``None`` values are ignored (so a notebook can pass every parameter it declares); strings are parsed as
    YAML (``"false"``, ``"3"``, ``"[0.5, 0.7]"``, ``"null"``) except for text fields, whose text is kept.
    Every value is checked as its stage checks it; errors name the setting.
    """
    unknown = sorted(k for k in overrides if not _settable(k))
    if unknown:
        raise InstlibError(f"unknown profile parameter(s) {', '.join(unknown)}; valid ones: "
                           f"{', '.join(Profile.field_names())}")
    top: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        name, _, field = key.partition(".")
        section = _section(name)
        if section is None:
            top[name] = _value(value, Profile.model_fields[name].annotation)
        elif field:
            sections.setdefault(name, {})[field] = _value(value, section.model_fields[field].annotation)
        else:  # a whole section: a dict from papermill, or YAML text from --set
            value = yaml.safe_load(value) if isinstance(value, str) else value
            if not isinstance(value, dict):
                raise InstlibError(f"profile parameter {name}: {value!r} is not a mapping of its settings "
                                   f"({', '.join(section.model_fields)})")
            sections.setdefault(name, {}).update(value)
    changed = {}
    for name, fields in sections.items():
        try:
            changed[name] = getattr(profile, name).updated(**fields)
        except SettingsError as exc:
            raise InstlibError("; ".join(f"profile parameter {name}.{f}: {p}" if f else f"profile parameter {name}: {p}"
                                         for f, p in exc.problems)) from None
    try:
        return profile.updated(**top, **changed)
    except SettingsError as exc:
        raise InstlibError("; ".join(f"profile parameter {f}: {p}" for f, p in exc.problems)) from None


#: Texts that mean "no value" for an optional field (YAML's own nulls plus Python's spelling).
_NULL_TEXT = ("null", "none", "~", "")


def _value(value: Any, hint: Any) -> Any:
    """A setting's value from the command line: text is YAML (``"false"``, ``"3"``, ``"[0.5, 0.7]"``) except
    for a text field, which keeps the text as written (a path such as ``/data/2024`` stays a string); one
    value for a list field is a list of one (``--set cv.mixes=none``)."""
    args = typing.get_args(hint)
    if isinstance(value, str):
        if type(None) in args and value.strip().lower() in _NULL_TEXT:
            return None
        if not (hint is str or (str in args and typing.get_origin(hint) is not tuple)):  # str or str | None
            try:
                value = yaml.safe_load(value)
            except yaml.YAMLError:
                pass  # the settings' own check reports it
    if typing.get_origin(hint) is tuple and isinstance(value, (str, int, float)):
        value = [value]
    return value


SMOKE = Profile(
    name="smoke",
    description="CI and tests: a diffusion prior trained for a few seconds, tiny counting models and tiny "
                "simulated images; checks that everything runs, measures nothing.",
    budget="the whole reproduction in under 5 minutes on 2 CPU cores, offline",
    data=DataConfig(real="simulate", n_real=12, image_size=64, cells=(3, 30), gradual_steps=4),
    synth=SynHCConfig(cell_size="auto"),
    diffusion_model="prior", prior=PriorConfig(steps=30, resolution=32, batch_size=8, seed=42),
    density_categories=((0, 14), (15, 100_000)),
    tokens=TokenTrainingConfig(steps=20, resolution=64, seed=42),
    transfer=TransferConfig(strength=0.7, steps=10, guidance=10.0, resolution=64, sampler="ddim"),
    sweep=SweepConfig(strengths=(0.3, 0.7, 0.9), images=6, shown=2),
    count=TrainConfig(recipe="instlib", model="test_efficientnet", pretrained=False, epochs=1, finetune_epochs=1,
                      crops_per_epoch=16, batch_size=8, crop_size=32),
    cv=GridConfig(folds=2, seeds=(42,), mixes=("none", "cutmix", "dacs")),
    device="cpu",
)

DEMO = Profile(
    name="demo",
    description="A laptop, offline: the cached Stable Diffusion v1.4 when there is one (else a diffusion "
                "prior trained in the run on its real images), simulated fluorescence images as the real "
                "domain, a small U-Net density-map counter trained from scratch in 3-fold cross-validation "
                "with 3 seeds. Shows the method and its figures; its numbers are not the paper's.",
    budget="under 20 minutes on 2 CPU cores, offline",
    data=DataConfig(real="simulate", n_real=36, image_size=128, cells=(5, 80), gradual_steps=6),
    synth=SynHCConfig(cell_size="auto"),
    diffusion_model="auto", prior=PriorConfig(steps=450, seed=42),
    density_categories=((0, 29), (30, 100_000)),
    tokens=TokenTrainingConfig(steps=50, resolution=128, seed=42),
    transfer=TransferConfig(strength=0.7, steps=16, guidance=10.0, resolution=128, sampler="ddim"),
    sweep=SweepConfig(strengths=(0.3, 0.5, 0.7, 0.9), images=12, shown=2),
    # unet16: as accurate as EfficientNet-B0 on these images at a fifth of the cost, which pays for 3 seeds
    # (book/method.md, "Which encoder"); fewer epochs than 24 cost accuracy.
    count=TrainConfig(recipe="instlib", model="unet16", pretrained=False, epochs=24, finetune_epochs=5,
                      crops_per_epoch=80, batch_size=8, crop_size=64),
    cv=GridConfig(folds=3, seeds=(42, 43, 44), mixes=("none", "cutmix", "dacs")),
)

PAPER = Profile(
    name="paper",
    description="The paper's setting: Stable Diffusion v1.4 with the CLIP ViT-L/14 image encoder, the authors' "
                "CLIP input and inversion timestep, tokens and InST styled after DAPI images, Syn-HC drawn from "
                "every stain's points, ImageNet EfficientNet-B0 regression (torchvision's weights) trained with "
                "the authors' recipe in their 5-fold cross-validation stratified by count (IDCIA's official "
                "split: --set count.split=official); mixing is the authors' 'DACS with CutMix' (CutMix; DACS "
                "with pseudo-labels needs a density output: --set count.head=density). Needs a GPU and internet.",
    budget="hours on one GPU (computed in book/reproducibility.md: about 4 h on a T4, 1.5 h on an A100)",
    data=DataConfig(real="idcia", n_real=0, image_size=800, cells=(1, 300), gradual_steps=10, stain="DAPI",
                    synhc_from="all"),
    synth=SynHCConfig(cell_size=15),
    diffusion_model=SD14, image_encoder=CLIP_L14,
    density_categories=((0, 49), (50, 149), (150, 100_000)),
    tokens=TokenTrainingConfig(steps=1000, resolution=512, seed=42, reference_clip_input=True),
    transfer=TransferConfig(strength=0.7, steps=50, guidance=10.0, resolution=512, reference_timesteps=True,
                            sampler="ddim"),
    sweep=SweepConfig(strengths=(0.3, 0.5, 0.7, 0.9), images=40, shown=4),
    count=TrainConfig(recipe="authors", split="stratified", model="efficientnet_b0", pretrained=True, epochs=25,
                      finetune_epochs=25, batch_size=8, crop_size=200),
    cv=GridConfig(folds=5, seeds=(42, 43, 44), mixes=("none", "cutmix")),
)

PROFILES: dict[str, Profile] = {p.name: p for p in (SMOKE, DEMO, PAPER)}


def get_profile(name: str | Profile, **overrides: Any) -> Profile:
    """The profile called ``name`` with ``overrides`` applied (see :func:`apply_overrides`)."""
    if isinstance(name, Profile):
        base = name
    else:
        try:
            base = PROFILES[name]
        except (KeyError, TypeError):
            raise InstlibError(f"unknown profile {name!r}; valid profiles: {', '.join(PROFILES)}") from None
    return apply_overrides(base, overrides)


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """``["key=value", ...]`` (from ``--set``) into a dict; values stay strings for :func:`apply_overrides`."""
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
        return str(Path(found[0]).parent.parent)
    return None


def resolve_models(profile: Profile) -> Profile:
    """Resolve ``diffusion_model="auto"``: the cached SD v1.4 when present, else ``prior`` (trained in the run)."""
    if profile.diffusion_model != "auto":
        return profile
    local = cached_sd14()
    if local is None:
        return profile.model_copy(update={"diffusion_model": PRIOR})
    return profile.model_copy(update={"diffusion_model": SD14, "image_encoder": profile.image_encoder or CLIP_L14})
