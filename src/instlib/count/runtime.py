"""Device, precision and seeding: the few places where CPU and GPU runs differ.

:func:`pick_device` and :func:`grad_scaler` are :mod:`instlib.runs.device`'s, shared with the style stages.
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch

from instlib.runs.device import autocast_dtype, grad_scaler, pick_device


def autocast(device: torch.device, enabled: bool = True, *,
             scaler: torch.amp.GradScaler | None = None) -> contextlib.AbstractContextManager:
    """Autocast in the device's half type (:mod:`instlib.runs.device`: bf16 on sm_80+, fp16 below); full
    precision on the CPU, where half types are not faster. A training step (gradients enabled) gets fp16
    only with an enabled ``scaler`` (:func:`grad_scaler`) for its loss, else it runs in fp32."""
    dtype = autocast_dtype(device, training=torch.is_grad_enabled(), scaler=scaler) if enabled else None
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=dtype)


def seed_everything(seed: int) -> torch.Generator:
    """Seed the global generators (weight init, dropout) and return a CPU generator for the data."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def as_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Model input layout: channels-last makes EfficientNet's convolutions ~1.5x faster on CPU."""
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


__all__ = ["as_input", "autocast", "grad_scaler", "pick_device", "seed_everything"]
