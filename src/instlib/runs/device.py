"""Device and precision, chosen once for every stage from what the GPU can do.

``torch.cuda.is_bf16_supported()`` answers True on a T4 (sm_75) because bf16 tensors can be emulated
there, but cuDNN has no bf16 convolution kernels below sm_80: a UNet or an EfficientNet in bf16 on a
T4 fails or crawls. So the half-precision type is chosen by compute capability:

===========================  =======================================  ===============================
device                       frozen networks (InST, token training)   autocast (counting)
===========================  =======================================  ===============================
CUDA, sm_80 and newer        bf16                                     bf16
CUDA, below sm_80 (T4, V100) fp16                                     fp16 with loss scaling in
                                                                      training, fp32 without it
CPU with bf16 instructions   bf16                                     none (fp32)
(AVX512-BF16 or AMX)
other CPUs and devices       fp32                                     none (fp32)
===========================  =======================================  ===============================

On a CPU that computes bf16 in hardware (Intel Cooper Lake, Sapphire Rapids and newer; AMD Zen 4 and
newer), one pass of the offline prior's UNet over a 768 x 1024 image takes 1.1 s in bf16 against 3.0 s
in fp32 (both channels_last, 2 threads): the frozen networks run in bf16 there. Elsewhere bf16 is
emulated and slower than fp32. Counting keeps fp32 on every CPU: its training was chosen and measured
in fp32.

fp16 gradients underflow without loss scaling (bf16 has fp32's range and needs none): token
training runs under ``accelerate`` with ``mixed_precision`` from :func:`mixed_precision`, whose fp16
mode scales the loss; a training loop of its own asks :func:`grad_scaler` for a scaler, and
:func:`autocast_dtype` gives fp16 to a training step only when it has one.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

#: Compute capability from which a GPU has bf16 tensor cores and cuDNN bf16 convolutions (Ampere).
BF16_CAPABILITY = (8, 0)


def default_device() -> torch.device:
    """The local GPU (``LOCAL_RANK``'s under ``accelerate launch``) if there is one, else the CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device("cpu")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else :func:`default_device`."""
    return torch.device(device) if device else default_device()


def half_dtype(device: torch.device) -> torch.dtype | None:
    """bf16 on CUDA GPUs of compute capability 8.0 and newer, fp16 on older ones, None (fp32) elsewhere."""
    if device.type != "cuda":
        return None
    capability = torch.cuda.get_device_capability(device)
    return torch.bfloat16 if tuple(capability) >= BF16_CAPABILITY else torch.float16


#: /proc/cpuinfo flags of x86 CPUs with bf16 arithmetic in hardware.
BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpu_has_bf16(cpuinfo: str | Path = "/proc/cpuinfo") -> bool:
    """Whether this CPU computes bf16 in hardware (x86 AVX512-BF16 or AMX, from the Linux CPU flags).

    False where the flags cannot be read (macOS, Windows): fp32 is the safe choice there.
    """
    try:
        text = Path(cpuinfo).read_text()
    except OSError:
        return False
    flags = {f for line in text.splitlines() if line.startswith("flags") for f in line.split(":", 1)[1].split()}
    return bool(flags & BF16_CPU_FLAGS)


def default_dtype(device: torch.device) -> torch.dtype:
    """The dtype of frozen networks on ``device``: its half type on a GPU, bf16 on a CPU that computes it in
    hardware (:func:`cpu_has_bf16`), else fp32 (emulated half precision is slower than fp32)."""
    if device.type == "cpu" and cpu_has_bf16():
        return torch.bfloat16
    return half_dtype(device) or torch.float32


def needs_loss_scaling(dtype: torch.dtype | None) -> bool:
    """Whether gradients computed in ``dtype`` need loss scaling (fp16's range is too narrow; bf16's is fp32's)."""
    return dtype == torch.float16


def mixed_precision(dtype: torch.dtype) -> str:
    """``accelerate``'s ``mixed_precision`` for networks in ``dtype`` (its fp16 mode scales the loss)."""
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "no")


def grad_scaler(device: torch.device, enabled: bool = True) -> torch.amp.GradScaler:
    """A loss scaler for training under :func:`autocast_dtype`; a no-op unless that dtype is fp16."""
    return torch.amp.GradScaler(device.type, enabled=enabled and needs_loss_scaling(half_dtype(device)))


def autocast_dtype(device: torch.device, *, training: bool, scaler: torch.amp.GradScaler | None = None
                   ) -> torch.dtype | None:
    """The autocast dtype on ``device``, or None for full precision.

    A training step in fp16 needs its loss scaled: without an enabled ``scaler`` it runs in fp32.
    """
    dtype = half_dtype(device)
    if training and needs_loss_scaling(dtype) and not (scaler is not None and scaler.is_enabled()):
        return None
    return dtype
