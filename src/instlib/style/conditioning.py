"""Conditioning: the prompt ``*`` whose token embedding comes from the style image, and the empty prompt.

The style embedding enters the text encoder through a forward hook on its token-embedding table, so
the position embeddings, causal mask and final layer norm are the text encoder's own (as the
reference's embedding manager does), and gradients reach the style block during training.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from instlib.errors import InstlibError
from instlib.style.models import StyleComponents
from instlib.style.tokens import StyleToken


def image_embeddings(components: StyleComponents, images: list[np.ndarray]) -> torch.Tensor:
    """Projected CLIP image embeddings ``(B, D)`` of ``uint8 (H, W, 3)`` images (no gradient)."""
    pixels = components.image_processor(images=list(images), return_tensors="pt").pixel_values
    with torch.no_grad():
        out = components.image_encoder(pixel_values=pixels.to(components.device, components.dtype))
    return out.image_embeds


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
    """``(B, D)`` placeholder embeddings: image i's CLIP embedding through ``tokens[i]``'s block (no gradient)."""
    embeds = image_embeddings(components, images).float()
    with torch.no_grad():
        return torch.cat([t.block(e[None]) for t, e in zip(tokens, embeds)])


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
