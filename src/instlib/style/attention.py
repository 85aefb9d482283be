"""Windowed self-attention: a UNet run on a whole image attends only as far as it did in training.

A fully convolutional UNet runs on any image size, except for its self-attention, whose cost and memory
grow with the square of the number of positions: on a whole 768 x 1024 image the prior's coarsest level
holds 12,288 positions and attention is half the time of a pass. It also attends far wider than it was
trained to (a 64 px crop: 8 x 8 positions). :func:`windowed_attention` makes every self-attention layer
attend within square windows of the model's training size (``unet.config.sample_size`` latent cells,
scaled to the layer's level), so a pass costs time linear in the pixels and a position sees the context
it saw in training. Windows do not overlap; along an edge the last window is moved back to end flush
with it, so every window is full-sized (no masks) and each position keeps the output of the window that
owns it. Cross-attention (to the prompt) is per position already and is left alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from diffusers.models.attention_processor import Attention, AttnProcessor2_0
from diffusers.models.transformers.transformer_2d import Transformer2DModel


def window_starts(length: int, window: int) -> list[int]:
    """Starts of the non-overlapping windows covering ``length``; the last one flush with the end."""
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, window))
    return starts if starts[-1] + window == length else [*starts, length - window]


def _owned(length: int, window: int) -> list[slice]:
    """Per window, the offsets within it whose output it keeps (the shifted last window keeps its tail)."""
    starts = window_starts(length, window)
    size = min(length, window)
    owned = [slice(0, size)] * len(starts)
    if len(starts) > 1:
        owned[-1] = slice(starts[-2] + window - starts[-1], size)
    return owned


class WindowedAttnProcessor(AttnProcessor2_0):
    """Self-attention within ``window x window`` windows of the ``grid = (h, w)`` its layer last saw."""

    def __init__(self, window: int):
        super().__init__()
        self.window = window
        self.grid: tuple[int, int] | None = None

    def __call__(self, attn: Attention, hidden_states: torch.Tensor, encoder_hidden_states=None, attention_mask=None,
                 temb=None, *args, **kwargs) -> torch.Tensor:
        h, w = self.grid
        if encoder_hidden_states is not None or attention_mask is not None or (h <= self.window and w <= self.window):
            return super().__call__(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        b, _, c = hidden_states.shape
        x = hidden_states.reshape(b, h, w, c)
        rows, cols = window_starts(h, self.window), window_starts(w, self.window)
        wh, ww = min(h, self.window), min(w, self.window)
        windows = torch.stack([x[:, r:r + wh, q:q + ww] for r in rows for q in cols], dim=1)  # (b, n, wh, ww, c)
        out = super().__call__(attn, windows.reshape(-1, wh * ww, c), None, None, temb, *args, **kwargs)
        out = out.reshape(b, len(rows), len(cols), wh, ww, c)
        own_r, own_c = _owned(h, self.window), _owned(w, self.window)
        merged = torch.cat([torch.cat([out[:, i, j, own_r[i], own_c[j]] for j in range(len(cols))], dim=2)
                            for i in range(len(rows))], dim=1)
        return merged.reshape(b, h * w, c)


@contextlib.contextmanager
def windowed_attention(unet: torch.nn.Module) -> Iterator[None]:
    """Within the block, ``unet``'s self-attention layers attend within windows of its training size."""
    size = int(unet.config.sample_size if isinstance(unet.config.sample_size, int) else unet.config.sample_size[0])
    latent: dict[str, tuple[int, int]] = {}
    handles, saved = [], []

    def record_input(module, args, kwargs):
        sample = args[0] if args else kwargs["sample"]
        latent["hw"] = tuple(sample.shape[-2:])

    handles.append(unet.register_forward_pre_hook(record_input, with_kwargs=True))
    for module in unet.modules():
        if not isinstance(module, Transformer2DModel):
            continue
        for block in module.transformer_blocks:
            attn = block.attn1
            saved.append((attn, attn.processor))
            processor = WindowedAttnProcessor(size)
            attn.set_processor(processor)

            def record_grid(mod, args, kwargs, processor=processor):
                hs = args[0] if args else kwargs["hidden_states"]
                h, w = hs.shape[-2:]
                scale = max(1, round(latent["hw"][0] / h))  # this layer's level: latent cells per position
                processor.grid, processor.window = (h, w), max(1, size // scale)

            handles.append(module.register_forward_pre_hook(record_grid, with_kwargs=True))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        for attn, processor in saved:
            attn.set_processor(processor)
