"""Precision by compute capability: a T4 (sm_75), an A100 (sm_80) and the CPU, faked, for every stage.

bf16 only from sm_80 (``torch.cuda.is_bf16_supported()`` says True on a T4 through emulation, where
cuDNN has no bf16 convolutions), fp16 below with loss scaling wherever gradients flow; on the CPU the
frozen style networks run in bf16 only where the CPU has bf16 instructions, counting always in fp32.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch

from instlib.count import runtime
from instlib.data.images import write_image
from instlib.data.points import write_points
from instlib.runs import device as dev
from instlib.runs.device import cpu_has_bf16
from instlib.style import models

GPUS = {"T4": (7, 5), "A100": (8, 0)}
# (style networks, token training's accelerate precision, counting autocast: inference, training with a
# loss scaler, training without one)
EXPECTED = {
    "T4": (torch.float16, "fp16", torch.float16, torch.float16, None),
    "A100": (torch.bfloat16, "bf16", torch.bfloat16, torch.bfloat16, torch.bfloat16),
    "CPU": (torch.float32, "no", None, None, None),
    "CPU with bf16": (torch.bfloat16, "bf16", None, None, None),
}


@pytest.fixture(params=list(EXPECTED))
def machine(request, monkeypatch) -> str:
    """The machine ``request.param``, faked: CUDA present (or not) with that compute capability."""
    name = request.param
    monkeypatch.setattr(torch.cuda, "is_available", lambda: name in GPUS)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: GPUS[name])
    # the check this module replaces: it answers True on every one of these GPUs
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(dev, "cpu_has_bf16", lambda: name == "CPU with bf16")
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    return name


class _Scaler:
    """An enabled loss scaler (a real one disables itself where CUDA is missing, as here)."""

    def is_enabled(self) -> bool:
        return True


def _autocast_dtype(device: torch.device, *, grad: bool, scaler=None) -> torch.dtype | None:
    """The dtype ``runtime.autocast`` enters (None: no autocast), recorded instead of entering CUDA's."""
    seen = []

    def record(device_type, dtype=None, **kwargs):
        seen.append((device_type, dtype))
        return contextlib.nullcontext()

    with pytest.MonkeyPatch.context() as mp, torch.set_grad_enabled(grad):
        mp.setattr(torch, "autocast", record)
        with runtime.autocast(device, True, scaler=scaler):
            pass
    assert len(seen) <= 1 and all(t == device.type for t, _ in seen)
    return seen[0][1] if seen else None


def test_each_stage_gets_the_precision_of_the_machine(machine):
    style_dtype, token_precision, infer, train_scaled, train_unscaled = EXPECTED[machine]
    device = models.default_device()  # what load_components and the counting runs default to
    assert device == runtime.pick_device() == (torch.device("cuda", 0) if machine in GPUS else torch.device("cpu"))
    # InST inference and the frozen networks of token training (load_components' default dtype)
    assert models.default_dtype(device) == style_dtype
    # token training: accelerate's mixed precision for those networks (its fp16 mode scales the loss)
    assert dev.mixed_precision(models.default_dtype(device)) == token_precision
    # counting: autocast when predicting, and when training with or without a loss scaler
    assert _autocast_dtype(device, grad=False) == infer
    assert _autocast_dtype(device, grad=True, scaler=_Scaler()) == train_scaled
    assert _autocast_dtype(device, grad=True) == train_unscaled
    assert _autocast_dtype(device, grad=True, scaler=runtime.grad_scaler(torch.device("cpu"))) == train_unscaled
    assert dev.needs_loss_scaling(dev.half_dtype(device)) is (machine == "T4")


def test_amp_off_means_full_precision_everywhere(machine):
    device = runtime.pick_device()
    with runtime.autocast(device, False) as ctx:
        assert ctx is None and not torch.is_autocast_enabled()


def test_the_rank_under_accelerate_picks_the_gpu(machine, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "3")
    expected = torch.device("cuda", 3) if machine in GPUS else torch.device("cpu")
    assert models.default_device() == runtime.pick_device() == expected
    assert runtime.pick_device("cpu") == torch.device("cpu")


def test_token_training_hands_accelerate_the_precision_of_its_networks(tmp_path, monkeypatch):
    """``train_style_token`` asks accelerate for fp16 (with its loss scaling) when the networks are fp16."""
    from instlib.style import load_components, train_style_token
    from instlib.style import train as train_module
    from instlib.config import TokenTrainingConfig

    rng = np.random.default_rng(0)
    write_image(tmp_path / "style" / "images" / "a.png", rng.integers(0, 255, (32, 32, 3), dtype=np.uint8))
    write_points(tmp_path / "style" / "points" / "a.csv", np.array([[4.0, 5.0]]))
    components = load_components("tiny", device="cpu")
    asked = []

    class Stop(Exception):
        pass

    def accelerator(mixed_precision, cpu):
        asked.append(mixed_precision)
        raise Stop

    monkeypatch.setattr(train_module, "Accelerator", accelerator)
    for dtype, expected in ((torch.float16, "fp16"), (torch.bfloat16, "bf16"), (torch.float32, "no")):
        components.dtype = dtype  # the dtype load_components chose (the weights themselves stay on the CPU)
        with pytest.raises(Stop):
            train_style_token(tmp_path / "style", tmp_path / f"{expected}.safetensors", components,
                              TokenTrainingConfig(steps=1, resolution=32), progress=False)
        assert asked[-1] == expected


@pytest.mark.parametrize(("flags", "expected"), [("fpu avx2 avx512f avx512_bf16 amx_tile", True),
                                                 ("fpu avx2 amx_bf16", True), ("fpu avx2 avx512f", False)])
def test_bf16_cpus_are_told_by_their_flags(tmp_path, flags, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert cpu_has_bf16.__wrapped__(cpuinfo) is expected
    assert cpu_has_bf16.__wrapped__(tmp_path / "missing") is False
