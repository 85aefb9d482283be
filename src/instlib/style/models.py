"""The frozen networks InST runs on: Stable Diffusion v1.x plus a CLIP image encoder.

:func:`load_components` takes a hub id (default SD v1.4 + CLIP ViT-L/14), a local folder in the
diffusers layout (``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/`` and
optionally ``image_encoder/``), or one of the built-in names of :data:`BUILDERS`: ``tiny`` (small
random models for tests and the smoke profile, identical in every process) or ``sd14-random`` (the
real architectures with random weights, for throughput benchmarks). Weights load from safetensors only.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from transformers import (CLIPImageProcessor, CLIPTextConfig, CLIPTextModel, CLIPTokenizer, CLIPVisionConfig,
                          CLIPVisionModelWithProjection)

from instlib.errors import InstlibError
from instlib.runs.device import default_device, default_dtype
from instlib.style.pixelspace import PixelSpace

DEFAULT_MODEL = "CompVis/stable-diffusion-v1-4"
DEFAULT_IMAGE_ENCODER = "openai/clip-vit-large-patch14"
SUBFOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")
IMAGE_ENCODER = "image_encoder"

# The DDIM sampler of the reference (ldm): no x0 clipping, alpha_prev of the last step = alphas_cumprod[0],
# grid 981, 961, ..., 1. Applied on top of whatever betas a loaded model's scheduler config has.
DDIM_SETTINGS = dict(clip_sample=False, set_alpha_to_one=False, steps_offset=1, timestep_spacing="leading")
SD_BETAS = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                prediction_type="epsilon")

# Files a hub snapshot needs (safetensors only; the repos also hold pickled .bin/.ckpt files we never fetch).
_SD_FILES = ["scheduler/*.json", "tokenizer/*", "text_encoder/config.json", "text_encoder/model.safetensors",
             "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
             "vae/diffusion_pytorch_model.safetensors", "image_encoder/*.json", "image_encoder/model.safetensors"]
_CLIP_FILES = ["config.json", "preprocessor_config.json", "model.safetensors"]

# Autoencoder classes a model folder may name in vae/config.json's _class_name: SD's VAE, or the exact
# pixel-space identity of a prior trained from scratch (instlib.style.prior).
AUTOENCODERS: dict[str, type] = {"AutoencoderKL": AutoencoderKL, "PixelSpace": PixelSpace}


@dataclass
class StyleComponents:
    """Everything transfer and training need, on one device in one dtype (the style block excepted)."""

    unet: UNet2DConditionModel
    vae: AutoencoderKL
    text_encoder: CLIPTextModel
    tokenizer: CLIPTokenizer
    image_encoder: CLIPVisionModelWithProjection
    image_processor: CLIPImageProcessor
    scheduler: DDIMScheduler
    model: str
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> StyleComponents:
        """Move every network to ``device`` / ``dtype`` (in place) and return self."""
        self.device = torch.device(device) if device is not None else self.device
        self.dtype = dtype or self.dtype
        for net in (self.unet, self.vae, self.text_encoder, self.image_encoder):
            net.to(self.device).eval().requires_grad_(False)
            if net.dtype != self.dtype:  # diffusers warns on any dtype cast, even a no-op one
                net.to(dtype=self.dtype)
        # Convolutions in NHWC: 1.6x faster per UNet pass on a CPU in fp32 and bf16 alike (oneDNN's native
        # layout), and the layout cuDNN's half-precision kernels want on a GPU.
        self.unet.to(memory_format=torch.channels_last)
        return self

    @property
    def hidden_size(self) -> int:
        """Width of the text encoder's token embeddings (the style token's width)."""
        return int(self.text_encoder.config.hidden_size)

    @property
    def latent_factor(self) -> int:
        """Pixels per latent cell along each axis (8 for SD)."""
        return 2 ** (len(self.vae.config.block_out_channels) - 1)


def ddim_scheduler(config: dict | None = None) -> DDIMScheduler:
    """A DDIM scheduler with the reference sampler's settings over ``config``'s betas (SD's by default)."""
    return DDIMScheduler.from_config({**SD_BETAS, **(config or {}), **DDIM_SETTINGS})


def tiny_tokenizer() -> CLIPTokenizer:
    """A CLIP tokenizer with one token per printable character (plus ``</w>`` forms), built offline."""
    chars = [chr(c) for c in range(33, 127)]
    vocab: dict[str, int] = {}
    for token in [*chars, *(c + "</w>" for c in chars), "<|startoftext|>", "<|endoftext|>"]:
        vocab.setdefault(token, len(vocab))
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n")  # no merges: words split into characters
        # model_max_length: without it the tokenizer's default (huge) overflows SD's 77 positions.
        return CLIPTokenizer(str(Path(tmp) / "vocab.json"), str(Path(tmp) / "merges.txt"), model_max_length=77)


def _text_config(tokenizer: CLIPTokenizer, **sizes) -> CLIPTextConfig:
    return CLIPTextConfig(max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **sizes)


def _assemble(unet, vae, text_config, vision_config, tokenizer, processor, model) -> StyleComponents:
    text_config._attn_implementation = vision_config._attn_implementation = "sdpa"
    return StyleComponents(unet=unet, vae=vae, text_encoder=CLIPTextModel(text_config), tokenizer=tokenizer,
                           image_encoder=CLIPVisionModelWithProjection(vision_config), image_processor=processor,
                           scheduler=ddim_scheduler(), model=model)


def build_tiny(device: torch.device) -> StyleComponents:
    """Small random models (about 0.6 M parameters, latent factor 8) for tests and the smoke profile.

    Built on the CPU under a fixed seed, so every process gets the same weights: a token trained on
    ``tiny`` in one run can be used by ``tiny`` in another.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tokenizer = tiny_tokenizer()
        unet = UNet2DConditionModel(sample_size=8, block_out_channels=(16, 32), layers_per_block=1, norm_num_groups=8,
                                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                                    cross_attention_dim=32, attention_head_dim=2)
        vae = AutoencoderKL(block_out_channels=(8, 16, 16, 16), norm_num_groups=8, layers_per_block=1,
                            down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                            latent_channels=4, sample_size=64)
        text = _text_config(tokenizer, vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=2)
        vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                  image_size=32, patch_size=8, projection_dim=32)
        processor = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
        return _assemble(unet, vae, text, vision, tokenizer, processor, "tiny")


def build_sd14_random(device: torch.device) -> StyleComponents:
    """SD v1.4's UNet/VAE and CLIP ViT-L/14's text and vision towers with random weights.

    Speed does not depend on weight values, so this benchmarks the real model offline. The tokenizer
    is the tiny one (the prompts are a few characters; the embedding table has the real 49408 rows).
    """
    with torch.device(device):  # initialise on the target device: ~1.4 G parameters are slow to init on a CPU
        tokenizer = tiny_tokenizer()
        unet = UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)
        vae = AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
                            down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
                            sample_size=512)
        text = _text_config(tokenizer, vocab_size=49408, hidden_size=768, intermediate_size=3072,
                            num_hidden_layers=12, num_attention_heads=12, projection_dim=768, hidden_act="quick_gelu")
        vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24,
                                  num_attention_heads=16, image_size=224, patch_size=14, projection_dim=768,
                                  hidden_act="quick_gelu")
        return _assemble(unet, vae, text, vision, tokenizer, CLIPImageProcessor(), "sd14-random")


BUILDERS: dict[str, Callable[[torch.device], StyleComponents]] = {"tiny": build_tiny, "sd14-random": build_sd14_random}


def _snapshot(repo: str, patterns: list[str]) -> Path:
    """Local folder of a hub repo (from the cache when offline); a clear error when it cannot be had."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo, allow_patterns=patterns))
    except Exception as exc:  # network, auth, missing repo, offline cache miss: all mean "not available"
        raise InstlibError(
            f"cannot get model '{repo}' from the Hugging Face hub and it is not in the local cache "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). Download it once on a "
            f"machine with internet ('hf download {repo}', after accepting its licence on huggingface.co if "
            "it asks), or pass a local folder in the diffusers layout, or use the model 'tiny' for an offline "
            "test run.") from exc


def _is_path(name: str) -> bool:
    return Path(name).expanduser().exists() or name.startswith(("/", ".", "~")) or name.count("/") != 1


def _resolve(name: str, patterns: list[str]) -> Path:
    if _is_path(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise InstlibError("no such model folder", path)
        return path
    return _snapshot(name, patterns)


def _autoencoder(root: Path) -> type:
    name = json.loads((root / "vae" / "config.json").read_text()).get("_class_name", "AutoencoderKL")
    if name not in AUTOENCODERS:
        raise InstlibError(f"has an autoencoder of class {name!r}; known: {', '.join(AUTOENCODERS)}", root / "vae")
    return AUTOENCODERS[name]


def _load_dir(root: Path, image_encoder: str | None, dtype: torch.dtype) -> StyleComponents:
    missing = [s for s in SUBFOLDERS if not (root / s).is_dir()]
    if missing:
        raise InstlibError(f"is not a Stable Diffusion folder in the diffusers layout: it lacks {', '.join(missing)}/",
                           root)
    if image_encoder is None:
        image_encoder = str(root / IMAGE_ENCODER) if (root / IMAGE_ENCODER).is_dir() else DEFAULT_IMAGE_ENCODER
    enc_root = _resolve(image_encoder, _CLIP_FILES)
    try:
        parts = dict(
            unet=UNet2DConditionModel.from_pretrained(root, subfolder="unet", torch_dtype=dtype, use_safetensors=True),
            vae=_autoencoder(root).from_pretrained(root, subfolder="vae", torch_dtype=dtype, use_safetensors=True),
            text_encoder=CLIPTextModel.from_pretrained(root, subfolder="text_encoder", dtype=dtype,
                                                       use_safetensors=True, attn_implementation="sdpa"),
            tokenizer=CLIPTokenizer.from_pretrained(root, subfolder="tokenizer"),
            scheduler=ddim_scheduler(dict(DDIMScheduler.load_config(root, subfolder="scheduler"))),
        )
        encoder = CLIPVisionModelWithProjection.from_pretrained(enc_root, dtype=dtype, use_safetensors=True,
                                                                attn_implementation="sdpa")
        processor = CLIPImageProcessor.from_pretrained(enc_root)
    except (OSError, ValueError, KeyError) as exc:
        raise InstlibError(f"cannot load its weights (safetensors only): {exc}", root) from exc
    if parts["scheduler"].config.prediction_type != "epsilon":
        raise InstlibError(f"predicts '{parts['scheduler'].config.prediction_type}'; InST needs an epsilon-"
                           "prediction model such as SD v1.x", root)
    return StyleComponents(**parts, image_encoder=encoder, image_processor=processor, model=str(root))


def load_components(model: str = DEFAULT_MODEL, image_encoder: str | None = None,
                    device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> StyleComponents:
    """Load (or build) the frozen networks and put them on ``device`` in ``dtype``.

    ``model``: a hub id, a local diffusers folder, or a name in :data:`BUILDERS`. ``image_encoder``: hub id
    or folder of a ``CLIPVisionModelWithProjection`` with its image processor; by default the model
    folder's ``image_encoder/`` if it has one, else CLIP ViT-L/14. Device defaults to the GPU if present;
    dtype to bf16 on GPUs of compute capability 8.0+ and on CPUs with bf16 instructions, fp16 on older GPUs,
    fp32 on other CPUs (:func:`instlib.runs.device.default_dtype`). Attention runs through PyTorch SDPA.
    """
    device = torch.device(device) if device is not None else default_device()
    dtype = dtype or default_dtype(device)
    if model in BUILDERS:
        components = BUILDERS[model](device)
    else:
        root = _resolve(model, _SD_FILES)
        components = _load_dir(root, image_encoder, dtype)
        if not _is_path(model):
            components.model = model  # record the hub id, not the cache path
    components.unet.set_attn_processor(AttnProcessor2_0())
    components.vae.set_attn_processor(AttnProcessor2_0())
    return components.to(device, dtype)


def save_components(components: StyleComponents, directory: str | Path) -> Path:
    """Write the components in the diffusers/transformers layout :func:`load_components` reads back."""
    root = Path(directory)
    components.unet.save_pretrained(root / "unet")
    components.vae.save_pretrained(root / "vae")
    components.text_encoder.save_pretrained(root / "text_encoder")
    components.tokenizer.save_pretrained(root / "tokenizer")
    components.scheduler.save_pretrained(root / "scheduler")
    components.image_encoder.save_pretrained(root / IMAGE_ENCODER)
    components.image_processor.save_pretrained(root / IMAGE_ENCODER)
    return root
