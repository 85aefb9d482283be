"""Conditioning: the prompt ``*`` whose token embedding comes from the style image, and the empty prompt.

The style embedding enters the text encoder through a forward hook on its token-embedding table, so
the position embeddings, causal mask and final layer norm are the text encoder's own (as the
reference's embedding manager does), and gradients reach the style block during training.

What the token sees: the style image's projected CLIP embedding, L2-normalised as the reference's
``CLIPModel(...).image_embeds`` are. The block has a single key, so its attention weight is always 1
and the token is an affine map of the embedding: the embedding's scale is the token's scale, and
normalising makes it independent of the encoder's output norm. The reference also casts its CLIP
input in a way that hides the image (:func:`reference_clip_cast`); a token trained with
``reference_clip_input=True`` reproduces that, and records it so transfer does the same.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from instlib.errors import InstlibError
from instlib.style.models import StyleComponents
from instlib.style.tokens import StyleToken


def reference_clip_cast(img: np.ndarray) -> np.ndarray:
    """What the reference hands CLIP for a ``uint8 (H, W, 3)`` image: a near-binary mask.

    The reference computes ``input_img[0].permute(1, 2, 0).cpu().numpy().astype(np.uint8)`` of the image
    scaled to ``[-1, 1]``: the float-to-uint8 cast truncates towards zero and wraps, so pixel value 0
    (-1.0) becomes 255, 255 (1.0) becomes 1 and every other value becomes 0. Written out here because a
    negative float's cast to an unsigned integer is platform-dependent.
    """
    return np.where(img == 0, 255, np.where(img == 255, 1, 0)).astype(np.uint8)


def image_embeddings(components: StyleComponents, images: list[np.ndarray],
                     reference_clip_input: bool = False) -> torch.Tensor:
    """L2-normalised projected CLIP image embeddings ``(B, D)``, fp32, of ``uint8 (H, W, 3)`` images (no
    gradient); ``reference_clip_input``: of :func:`reference_clip_cast` of them, as the reference."""
    if reference_clip_input:
        images = [reference_clip_cast(img) for img in images]
    pixels = components.image_processor(images=list(images), return_tensors="pt").pixel_values
    with torch.no_grad():
        out = components.image_encoder(pixel_values=pixels.to(components.device, components.dtype))
    return torch.nn.functional.normalize(out.image_embeds.float(), dim=-1)


def placeholder_id(components: StyleComponents, placeholder: str) -> int:
    """Token id of ``placeholder``; it must be one token of the tokenizer's vocabulary."""
    ids = components.tokenizer(placeholder, add_special_tokens=False).input_ids
    if len(ids) != 1:
        raise InstlibError(f"placeholder {placeholder!r} is {len(ids)} tokens for this tokenizer; it must be one")
    return ids[0]


@contextlib.contextmanager
def _inject(components: StyleComponents, token_id: int, vectors: torch.Tensor) -> Iterator[None]:
    def hook(module, args, output):
        mask = (args[0] == token_id)[..., None]
        return torch.where(mask, vectors[:, None, :].to(output.dtype), output)

    handle = components.text_encoder.get_input_embeddings().register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def encode_prompts(components: StyleComponents, prompts: list[str], token_embeds: torch.Tensor | None = None,
                   placeholder: str = "*") -> torch.Tensor:
    """``(B, 77, D)`` text-encoder states of ``prompts``; ``token_embeds[i]`` replaces ``placeholder`` in prompt i.

    Gradients flow into ``token_embeds`` (the text encoder itself is frozen).
    """
    tok = components.tokenizer
    ids = tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True,
              return_tensors="pt").input_ids.to(components.device)
    with contextlib.ExitStack() as stack:
        if token_embeds is not None:
            stack.enter_context(_inject(components, placeholder_id(components, placeholder), token_embeds))
        return components.text_encoder(input_ids=ids).last_hidden_state


def check_token(components: StyleComponents, token: StyleToken) -> None:
    """Refuse a token whose width does not fit this model (trained on another base model)."""
    dims = {"token": token.block.config.dim, "text encoder": components.hidden_size,
            "image encoder": int(components.image_encoder.config.projection_dim)}
    if len(set(dims.values())) != 1:
        raise InstlibError(f"style token (trained on '{token.base_model}') does not fit model '{components.model}': "
                           f"widths {dims}")


def token_embeddings(components: StyleComponents, tokens: list[StyleToken], images: list[np.ndarray]) -> torch.Tensor:
    """``(B, D)`` placeholder embeddings: image i's CLIP embedding, made as ``tokens[i]`` was trained (its
    ``reference_clip_input``), through ``tokens[i]``'s block (no gradient)."""
    embeds = {flag: image_embeddings(components, images, flag) for flag in {t.reference_clip_input for t in tokens}}
    with torch.no_grad():
        return torch.cat([t.block(embeds[t.reference_clip_input][i:i + 1]) for i, t in enumerate(tokens)])


def style_conditioning(components: StyleComponents, tokens: list[StyleToken],
                       style_images: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cond, uncond)``: prompt ``*`` styled by each image's token, and the empty prompt (as the reference)."""
    for token in {id(t): t for t in tokens}.values():
        check_token(components, token)
    embeds = token_embeddings(components, tokens, style_images)
    n = len(style_images)
    with torch.no_grad():
        cond = encode_prompts(components, [tokens[0].placeholder] * n, embeds, tokens[0].placeholder)
        uncond = encode_prompts(components, [""] * n)
    return cond, uncond
