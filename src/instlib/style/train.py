"""Training a style token: only the attention block learns, everything else is frozen.

Per step (DESIGN.md section 4): pick style images, random horizontal flip; VAE-encode (x 0.18215);
add noise at uniform timesteps with SD's schedule; the CLIP embedding of the same images goes
through the block into the prompt ``*``; loss = MSE between the UNet's predicted noise and the
noise. AdamW, lr 1e-4, batch 1, the whole image resized (bicubic) to 512 x 512 by default: the
reference's data loader (``ldm/data/personalized.py``) has ``center_crop=False`` and its config does not
set it. ``geometry="center-crop"`` takes the largest centred square first instead (:data:`GEOMETRIES`).
The CLIP embedding is L2-normalised; ``reference_clip_input=True`` feeds CLIP the reference's cast of
the image (see :mod:`instlib.style.conditioning`) and is recorded in the token for transfer.

Which images: a style folder, narrowed by count category and by an :class:`ImageFilter` (stain, name
glob, an explicit list such as a split's training part); the token's ``info`` names the images it saw.

Runs under ``accelerate launch`` on several GPUs without changes (each process draws its own
images; the block's gradients are averaged). Every ``checkpoint_every`` steps the block, the
optimiser state and the loss log are saved (``<out stem>.ckpt.safetensors``, ``<out stem>.loss.csv``);
rerunning the same command after a kill resumes from there and ends with the same token as an
uninterrupted run, because every step's randomness is seeded from ``(seed, process, step)``.
A larger ``steps`` continues a finished training.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers.utils.torch_utils import randn_tensor
from PIL import Image
from tqdm.auto import tqdm

from instlib.config.style import TokenTrainingConfig
from instlib.data.atomic import atomic_open
from instlib.data.tensorfile import read_tensors, write_tensors
from instlib.data.folder import IMAGES, list_samples
from instlib.data.selection import ImageFilter
from instlib.errors import DataError, InstlibError
from instlib.runs.device import mixed_precision
from instlib.style.conditioning import check_token, encode_prompts, image_embeddings
from instlib.style.imaging import center_square, list_images, load_rgb, resize, to_pixels
from instlib.style.models import StyleComponents
from instlib.style.tiling import check_tile
from instlib.style.tokens import StyleToken, block_tensors, new_token, save_token, token_from_file, token_metadata
from instlib.style.transfer import encode_latents, predict_noise

CHECKPOINT_FORMAT = "instlib.style-token-checkpoint"

#: How a style image becomes a square training image of ``resolution`` pixels.
GEOMETRIES: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {
    "resize": lambda img, res: resize(img, (res, res), Image.Resampling.BICUBIC),  # the reference
    "center-crop": lambda img, res: resize(center_square(img), (res, res), Image.Resampling.BICUBIC),
}


def checkpoint_path(out: str | Path) -> Path:
    """Where training towards ``out`` keeps its resumable checkpoint."""
    return Path(out).with_name(Path(out).stem + ".ckpt.safetensors")


def loss_log_path(out: str | Path) -> Path:
    """The loss log beside ``out``: CSV with columns ``step,loss``."""
    return Path(out).with_name(Path(out).stem + ".loss.csv")


def style_images(style_dir: str | Path, category: tuple[int, int] | None = None,
                 select: ImageFilter | None = None) -> list[Path]:
    """Style images of a folder; with ``category=(lo, hi)`` only those with ``lo <= count <= hi`` cells,
    with ``select`` only those it passes."""
    style_dir = Path(style_dir)
    if select is not None:
        allowed = set(select.select(style_dir, list(list_images(style_dir))))
    if category is None:
        paths = list(list_images(style_dir).values())
    elif (style_dir / IMAGES).is_dir():
        paths = [s.image for s in list_samples(style_dir) if category[0] <= s.count() <= category[1]]
    else:
        raise DataError(f"has no {IMAGES}/ and points/ subfolders, so its images cannot be split by cell count",
                        style_dir)
    if select is not None:
        paths = [p for p in paths if p.stem in allowed]
    if not paths:
        rng = f" with {category[0]} to {category[1]} cells" if category else ""
        raise DataError(f"has no style images{rng}", style_dir)
    return paths


def _save_checkpoint(path: Path, token: StyleToken, optimizer: torch.optim.Optimizer, step: int,
                     settings: dict) -> None:
    state = optimizer.state_dict()
    tensors = block_tensors(token)
    for idx, param_state in state["state"].items():
        for key, value in param_state.items():
            tensors[f"optim.{idx}.{key}"] = torch.as_tensor(value)
    meta = {**token_metadata(token), "step": str(step), "settings": json.dumps(settings, sort_keys=True),
            "param_groups": json.dumps(state["param_groups"])}
    write_tensors(path, tensors, meta, CHECKPOINT_FORMAT)


def _load_checkpoint(path: Path) -> tuple[StyleToken, dict, int, dict]:
    tensors, meta = read_tensors(path, CHECKPOINT_FORMAT, "token checkpoint")
    block = {k: v for k, v in tensors.items() if not k.startswith("optim.")}
    token = token_from_file(block, meta, path)
    state: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    optim = {"state": state, "param_groups": json.loads(meta["param_groups"])}
    return token, optim, int(meta["step"]), json.loads(meta["settings"])


def _write_losses(path: Path, losses: list[tuple[int, float]]) -> None:
    with atomic_open(path, "w", newline="") as fh:
        fh.write("step,loss\n")
        fh.writelines(f"{s},{v!r}\n" for s, v in losses)


def _read_losses(path: Path, upto: int) -> list[tuple[int, float]]:
    if not path.is_file():
        return []
    rows = [line.split(",") for line in path.read_text().splitlines()[1:] if line]
    return [(int(s), float(v)) for s, v in rows if int(s) <= upto]


def _step_generator(seed: int, process: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, process, step]).generate_state(1)[0]))


def _loss(components: StyleComponents, block: torch.nn.Module, images: list[np.ndarray], placeholder: str,
          config: TokenTrainingConfig, g: torch.Generator) -> torch.Tensor:
    n = config.batch_size
    picks = torch.randint(len(images), (n,), generator=g).tolist()
    flips = (torch.rand(n, generator=g) < config.flip_p).tolist()
    batch = [np.ascontiguousarray(images[i][:, ::-1]) if f else images[i] for i, f in zip(picks, flips)]
    with torch.no_grad():
        latents = encode_latents(components, to_pixels(batch, components.device, components.dtype), g)
        embeds = image_embeddings(components, batch, config.reference_clip_input)
    noise = randn_tensor(latents.shape, generator=g, device=latents.device, dtype=latents.dtype)
    t = torch.randint(components.scheduler.config.num_train_timesteps, (n,), generator=g).to(latents.device)
    noisy = components.scheduler.add_noise(latents, noise, t)
    cond = encode_prompts(components, [placeholder] * n, block(embeds), placeholder)
    return F.mse_loss(predict_noise(components, noisy, t, cond), noise)


def _resume(out: Path, settings: dict, config: TokenTrainingConfig, overwrite: bool):
    ckpt = checkpoint_path(out)
    if overwrite:  # a stale checkpoint must not be resumed if this fresh run is killed before its first one
        ckpt.unlink(missing_ok=True)
        loss_log_path(out).unlink(missing_ok=True)
    if not ckpt.is_file():
        if out.exists() and not overwrite:
            raise InstlibError("exists and has no checkpoint to resume from; choose another --out or pass --overwrite",
                               out)
        return None
    token, optim, step, saved = _load_checkpoint(ckpt)
    if saved != json.loads(json.dumps(settings)):
        changed = sorted(k for k in {**saved, **settings} if saved.get(k) != settings.get(k))
        raise InstlibError(f"holds a training with other settings ({', '.join(changed)}); "
                           "choose another --out or pass --overwrite", ckpt)
    if step > config.steps:
        raise InstlibError(f"holds {step} trained steps, more than the {config.steps} asked for", ckpt)
    return token, optim, step


def _fit(components: StyleComponents, token: StyleToken, optim_state: dict | None, images: list[np.ndarray],
         config: TokenTrainingConfig, out: Path, start: int, losses: list[tuple[int, float]], settings: dict,
         info: dict, progress: bool) -> None:
    # fp16 (GPUs below sm_80): accelerate scales the loss, else the block's small gradients underflow
    accelerator = Accelerator(mixed_precision=mixed_precision(components.dtype), cpu=components.device.type == "cpu")
    if accelerator.device != components.device:
        components.to(accelerator.device)
    token.block.to(accelerator.device).train()
    optimizer = torch.optim.AdamW(token.block.parameters(), lr=config.lr)
    if optim_state:
        optimizer.load_state_dict(optim_state)
    block, optimizer = accelerator.prepare(token.block, optimizer)
    token.info = {**info, "batch_size": config.batch_size * accelerator.num_processes}
    bar = tqdm(total=config.steps, initial=start, desc=f"train {out.name}",
               disable=not (progress and accelerator.is_main_process))
    with torch.random.fork_rng(devices=[accelerator.device] if accelerator.device.type == "cuda" else []):
        for step in range(start, config.steps):
            g = _step_generator(config.seed, accelerator.process_index, step)
            torch.manual_seed(g.initial_seed())  # dropout draws from the global RNG: seed it per step too
            loss = _loss(components, block, images, token.placeholder, config, g)
            accelerator.backward(loss)
            optimizer.step()
            optimizer.zero_grad()
            losses.append((step + 1, accelerator.gather(loss.detach()[None]).mean().item()))
            bar.update(1)
            bar.set_postfix(loss=f"{losses[-1][1]:.4f}")
            if accelerator.is_main_process and ((step + 1) % config.checkpoint_every == 0 or step + 1 == config.steps):
                _save_checkpoint(checkpoint_path(out), token, optimizer, step + 1, settings)
                _write_losses(loss_log_path(out), losses)
    bar.close()
    token.block.eval()
    if accelerator.is_main_process:
        save_token(token, out)
    accelerator.wait_for_everyone()


def train_style_token(style_dir: str | Path, out: str | Path, components: StyleComponents,
                      config: TokenTrainingConfig, *, category: tuple[int, int] | None = None,
                      select: ImageFilter | None = None, progress: bool = True, overwrite: bool = False,
                      placeholder: str = "*") -> Path:
    """Train a style token on the images of ``style_dir`` with ``config`` and write it to ``out`` (safetensors).

    Also writes ``<out stem>.loss.csv`` (``step,loss``) and the checkpoint (see module docstring).
    ``category=(lo, hi)``: train only on style images with ``lo <= count <= hi`` cells (needs points).
    ``select``: train only on the images it passes (stain, name glob, explicit names).
    """
    check_tile(config.resolution, components.latent_factor)
    out = Path(out)
    paths = style_images(style_dir, category, select)
    images = [GEOMETRIES[config.geometry](load_rgb(p), config.resolution)
              for p in tqdm(paths, desc=f"load {style_dir}", disable=not progress)]
    selection = select.describe() if select is not None else None
    settings = {"model": components.model, "style": [str(p.resolve()) for p in paths], "placeholder": placeholder,
                "category": list(category) if category else None, "select": selection,
                **{k: v for k, v in config.dump().items() if k not in ("steps", "checkpoint_every")}}
    info = {**{k: v for k, v in config.dump().items() if k in ("steps", "lr", "resolution", "seed", "geometry",
                                                                 "reference_clip_input")},
            "images": len(paths), "names": [p.stem for p in paths], "select": selection}
    resumed = _resume(out, settings, config, overwrite)
    token, optim_state, start = resumed or (new_token(components.hidden_size, placeholder=placeholder,
                                                      base_model=components.model, category=category,
                                                      seed=config.seed,
                                                      reference_clip_input=config.reference_clip_input), None, 0)
    check_token(components, token)
    if start < config.steps or not out.is_file():
        losses = _read_losses(loss_log_path(out), start) if resumed else []
        _fit(components, token, optim_state, images, config, out, start, losses, settings, info, progress)
    return out


def train_category_tokens(style_dir: str | Path, out_dir: str | Path, components: StyleComponents,
                          categories: list[tuple[int, int]], config: TokenTrainingConfig, *,
                          images: Collection[str] | None = None, select: ImageFilter | None = None,
                          **kwargs) -> list[Path]:
    """One token per cell-count range, ``out_dir/token-<lo>-<hi>.safetensors``; ``kwargs`` as
    :func:`train_style_token`. Transfer with ``out_dir`` as the token picks each image's by its count.

    ``images``: the only image names the tokens may see (e.g. a split's training part), on top of ``select``.
    """
    if images is not None:
        select = replace(select or ImageFilter(), only=frozenset(images))
    return [train_style_token(style_dir, Path(out_dir) / f"token-{lo}-{hi}.safetensors", components, config,
                              category=(lo, hi), select=select, **kwargs) for lo, hi in categories]
