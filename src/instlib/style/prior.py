"""A diffusion prior learned from scratch on the user's own unlabelled real images.

Offline there are no Stable Diffusion weights, and a random UNet turns every image into noise.
Fluorescence micrographs are a narrow domain (dark background, blurred textured blobs, sensor noise): a
small UNet trained for minutes on random crops of a few dozen images learns to denoise them from the
moderate noise levels that stochastic inversion at strength 0.3-0.7 starts from. :func:`train_prior`
writes it in the diffusers layout, so :func:`~instlib.style.models.load_components` loads it as it loads
SD v1.4 and token training and transfer run unchanged on it.

Design, and why:

- **Pixel space** (:class:`~instlib.style.pixelspace.PixelSpace`, latent factor 1): exact, free, and at
  64-128 px cheap enough; latent AdaIN becomes AdaIN of intensity statistics.
- **UNet**: a small ``UNet2DConditionModel`` (1.4 M parameters, 4 levels, attention at the coarsest one),
  epsilon prediction under SD's scaled-linear betas, so the reference's DDIM settings apply. Fully
  convolutional: it runs at any multiple of 8 px.
- **A live style token.** The UNet is conditioned on the prompt ``*`` whose token embedding is a
  :class:`~instlib.style.tokens.StyleTokenBlock` applied to the projected embedding of a tiny CLIP vision
  encoder, all three trained jointly with the UNet. The embedding is taken from *another* random crop of the
  same image than the one denoised: the condition can then only carry what the two crops share (the image's
  style: intensity, blur, noise, texture), not where its nuclei are, so at transfer time a style image
  restyles content without pasting its own layout. The embedding is L2-normalised, as transfer makes it.
  The block is saved as ``token.safetensors`` (usable as-is by transfer); ``instlib style train --model
  PRIOR`` trains a new one as on SD. Measured on simulated stains (book/method.md), the token carries no
  image's style: the jointly trained encoder gives every image nearly the same embedding (pairwise cosine
  0.985 or more; 0.996 with the token also in the timestep embedding, tried and dropped); transfer on a
  prior therefore skips guidance.
- **Classifier-free guidance**: with probability ``cond_dropout`` a sample is conditioned on the empty
  prompt ``""``, the unconditional branch transfer uses.
- Text encoder and tokenizer: the tiny random CLIP text model of ``models.build_tiny``'s kind, frozen (the
  gradient passes through it to the token, as in token training).

Resumable: every ``checkpoint_every`` steps the weights, optimiser state and loss history are saved
(``checkpoint.pt``, atomic; read back with ``weights_only=True``). Each step's randomness (crops, flips,
rotations, noise, timesteps, dropout) is seeded from ``(seed, step)``, so a resumed run ends bit-exactly
where an uninterrupted one does. ``prior.json`` is written last and marks a finished prior.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor2_0
from diffusers.utils.torch_utils import randn_tensor
from tqdm.auto import tqdm
from transformers import CLIPImageProcessor, CLIPVisionConfig

from instlib.config.style import PriorConfig
from instlib.data.atomic import atomic_open, atomic_path, read_json, write_json
from instlib.errors import DataError, InstlibError
from instlib.style.conditioning import encode_prompts
from instlib.style.imaging import list_images, load_rgb, to_pixels
from instlib.style.models import StyleComponents, _assemble, _text_config, save_components, tiny_tokenizer
from instlib.style.pixelspace import PixelSpace
from instlib.style.tokens import StyleToken, new_token, save_token

MANIFEST = "prior.json"
CHECKPOINT = "checkpoint.pt"
LOSSES = "loss.csv"
TOKEN = "token.safetensors"


def build_prior(config: PriorConfig) -> tuple[StyleComponents, StyleToken]:
    """Freshly initialised prior networks and its style token (the init depends only on ``config.seed``)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        tokenizer = tiny_tokenizer()
        n = len(config.channels)
        unet = UNet2DConditionModel(
            sample_size=config.resolution, in_channels=3, out_channels=3, block_out_channels=config.channels,
            layers_per_block=1, norm_num_groups=8, cross_attention_dim=config.width, attention_head_dim=8,
            # Attention only at the coarsest level (and the mid block): self-attention over a 32 x 32 map of
            # a batch of crops costs ten times the convolutions on a CPU; the style is global anyway.
            down_block_types=("DownBlock2D",) * (n - 1) + ("CrossAttnDownBlock2D",),
            up_block_types=("CrossAttnUpBlock2D",) + ("UpBlock2D",) * (n - 1))
        text = _text_config(tokenizer, vocab_size=len(tokenizer), hidden_size=config.width,
                            intermediate_size=2 * config.width, num_hidden_layers=2, num_attention_heads=2)
        # The encoder sees style crops at the prior's resolution (patches of 8 px keep sensor noise visible).
        vision = CLIPVisionConfig(hidden_size=config.width, intermediate_size=2 * config.width, num_hidden_layers=2,
                                  num_attention_heads=2, image_size=config.resolution, patch_size=8,
                                  projection_dim=config.width)
        processor = CLIPImageProcessor(size={"shortest_edge": config.resolution},
                                       crop_size={"height": config.resolution, "width": config.resolution})
        components = _assemble(unet, PixelSpace(), text, vision, tokenizer, processor, "prior")
        components.unet.set_attn_processor(AttnProcessor2_0())
    return components, new_token(config.width, base_model="prior", seed=config.seed)


def real_images(real_dirs: list[str | Path]) -> list[Path]:
    """The image files of the real folders (points, if any, are never read)."""
    paths = [p for d in real_dirs for p in list_images(d).values()]
    if not paths:
        raise DataError("holds no images", real_dirs[0] if real_dirs else ".")
    return paths


def _step_rng(seed: int, step: int) -> tuple[np.random.Generator, torch.Generator]:
    ss = np.random.SeedSequence([seed, step])
    return np.random.default_rng(ss), torch.Generator().manual_seed(int(ss.generate_state(1)[0]))


def _crop(img: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random ``size`` square of ``img``, randomly flipped and rotated by a multiple of 90 degrees."""
    top, left = rng.integers(img.shape[0] - size + 1), rng.integers(img.shape[1] - size + 1)
    crop = img[top:top + size, left:left + size]
    crop = np.rot90(crop[:, ::-1] if rng.random() < 0.5 else crop, k=int(rng.integers(4)))
    return np.ascontiguousarray(crop)


def _batch(images: list[np.ndarray], config: PriorConfig, rng: np.random.Generator):
    """``(targets, styles)``: crops to denoise and, per crop, another crop of the same image (its style)."""
    picks = rng.integers(len(images), size=config.batch_size)
    targets = [_crop(images[i], config.resolution, rng) for i in picks]
    styles = [_crop(images[i], config.resolution, rng) for i in picks]
    return targets, styles


class _Trainable(torch.nn.Module):
    """The trained parts in one module (one state dict, one optimiser)."""

    def __init__(self, components: StyleComponents, token: StyleToken):
        super().__init__()
        self.unet, self.image_encoder, self.block = components.unet, components.image_encoder, token.block


def _loss(components: StyleComponents, nets: _Trainable, images: list[np.ndarray], uncond: torch.Tensor,
          config: PriorConfig, rng: np.random.Generator, g: torch.Generator) -> torch.Tensor:
    targets, styles = _batch(images, config, rng)
    x = to_pixels(targets, components.device, components.dtype)
    style_pixels = components.image_processor(images=styles, return_tensors="pt").pixel_values
    # L2-normalised, as transfer embeds style images (conditioning.image_embeddings): the token's scale is the
    # embedding's, so a token trained on raw embeddings would see out-of-range inputs at transfer.
    embeds = F.normalize(nets.image_encoder(pixel_values=style_pixels.to(components.device)).image_embeds, dim=-1)
    n = config.batch_size
    cond = encode_prompts(components, ["*"] * n, nets.block(embeds), "*")
    drop = (torch.rand(n, generator=g) < config.cond_dropout).to(components.device)
    cond = torch.where(drop[:, None, None], uncond.expand_as(cond), cond)
    noise = randn_tensor(x.shape, generator=g, device=x.device, dtype=x.dtype)
    t = torch.randint(components.scheduler.config.num_train_timesteps, (n,), generator=g).to(x.device)
    pred = nets.unet(components.scheduler.add_noise(x, noise, t), t, encoder_hidden_states=cond).sample
    return F.mse_loss(pred.float(), noise.float())


def _settings(paths: list[Path], config: PriorConfig) -> dict:
    keep = {k: v for k, v in config.dump().items() if k not in ("steps", "checkpoint_every")}
    return json.loads(json.dumps({"real": [str(p.resolve()) for p in paths], **keep}))


def _start(out: Path, settings: dict, config: PriorConfig, overwrite: bool) -> dict | None:
    """The checkpoint to resume from (None: start afresh); refuses an output that holds something else."""
    if overwrite and out.exists():
        shutil.rmtree(out)
    ckpt = out / CHECKPOINT
    if not ckpt.is_file():
        if out.exists() and any(out.iterdir()):
            raise InstlibError("exists and holds no prior checkpoint to resume; choose another --out or pass "
                               "--overwrite", out)
        return None
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    if state["settings"] != settings:
        changed = sorted(k for k in {**state["settings"], **settings}
                         if state["settings"].get(k) != settings.get(k))
        raise InstlibError(f"holds a prior trained with other settings ({', '.join(changed)}); choose another "
                           "--out or pass --overwrite", out)
    if state["step"] > config.steps:
        raise InstlibError(f"holds {state['step']} trained steps, more than the {config.steps} asked for", out)
    return state


def _checkpoint(out: Path, nets: _Trainable, optimizer: torch.optim.Optimizer, step: int, settings: dict,
                losses: list[tuple[int, float]]) -> None:
    state = {"model": nets.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "settings": settings,
             "losses": losses}
    with atomic_path(out / CHECKPOINT) as tmp:
        torch.save(state, tmp)
    with atomic_open(out / LOSSES, "w", newline="") as fh:
        fh.write("step,loss\n")
        fh.writelines(f"{s},{v!r}\n" for s, v in losses)


def _save(out: Path, components: StyleComponents, token: StyleToken, config: PriorConfig, paths: list[Path],
          settings: dict) -> None:
    save_components(components, out)
    token.info = {"prior": True, "steps": config.steps, "resolution": config.resolution}
    save_token(token, out / TOKEN)
    manifest = {"format": "instlib.prior", "settings": settings, "steps": config.steps,
                "images": len(paths), "images_seen": config.steps * config.batch_size,
                "resolution": config.resolution, "checkpoint_every": config.checkpoint_every}
    write_json(out / MANIFEST, manifest, sort_keys=False)  # last: marks the prior finished


def train_prior(real_dirs: list[str | Path] | str | Path, out: str | Path, config: PriorConfig | None = None, *,
                device: torch.device | str = "cpu", overwrite: bool = False, progress: bool = True) -> Path:
    """Train a prior on the real images of ``real_dirs`` and write it to the folder ``out``; return ``out``.

    Rerunning the same call after a kill resumes from the last checkpoint; a larger ``steps`` continues a
    finished prior. ``out`` also gets ``loss.csv`` (``step,loss``) and ``prior.json`` (settings, images
    seen, resolution). An ``out`` holding anything else is refused unless ``overwrite``.
    """
    config = config or PriorConfig()
    real_dirs = [real_dirs] if isinstance(real_dirs, (str, Path)) else list(real_dirs)
    out = Path(out)
    paths = real_images(real_dirs)
    settings = _settings(paths, config)
    state = _start(out, settings, config, overwrite)
    if (read_json(out / MANIFEST) or {}).get("steps") == config.steps:  # finished
        return out
    images = [load_rgb(p) for p in tqdm(paths, desc="load real images", disable=not progress)]
    small = [p for p, im in zip(paths, images) if min(im.shape[:2]) < config.resolution]
    if small:
        raise DataError(f"is smaller than the prior's resolution {config.resolution}", small[0])
    components, token = build_prior(config)
    components.to(device)
    nets = _Trainable(components, token).train().requires_grad_(True)
    components.text_encoder.requires_grad_(False)
    optimizer = torch.optim.AdamW(nets.parameters(), lr=config.lr)
    start, losses = 0, []
    if state is not None:
        nets.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start, losses = state["step"], [tuple(x) for x in state["losses"]]
    with torch.no_grad():
        uncond = encode_prompts(components, [""])
    out.mkdir(parents=True, exist_ok=True)
    bar = tqdm(total=config.steps, initial=start, desc=f"prior {out.name}", disable=not progress)
    with torch.random.fork_rng(devices=[]):
        for step in range(start, config.steps):
            rng, g = _step_rng(config.seed, step)
            torch.manual_seed(g.initial_seed())  # dropout inside the networks draws from the global RNG
            loss = _loss(components, nets, images, uncond, config, rng, g)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(nets.parameters(), 1.0)  # from scratch at lr 1e-3: tame early spikes
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append((step + 1, loss.item()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1][1]:.4f}")
            if (step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps:
                _checkpoint(out, nets, optimizer, step + 1, settings, losses)
    bar.close()
    nets.eval()
    _save(out, components, token, config, paths, settings)
    return out
