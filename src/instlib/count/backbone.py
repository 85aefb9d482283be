"""Backbones for the counting models: ``timm``'s, or this package's encoders trained from scratch
(:mod:`instlib.count.encoders`); checked up front, ImageNet weights only when reachable."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
from torch import nn

from instlib.count.encoders import ENCODERS, create_encoder
from instlib.errors import InstlibError

#: The ImageNet weights a backbone named without a pretrained tag loads, pinned because timm's default tag
#: changes between releases. EfficientNet-B0: the authors' torchvision ``IMAGENET1K_V1`` weights are timm's
#: ``efficientnet_b0.ra_in1k`` (RandAugment, ImageNet top-1 77.7%) converted to torchvision's module names:
#: torchvision first published them as ``efficientnet_b0_rwightman-3dd342df.pth``, after timm's file
#: ``efficientnet_b0_ra-3dd342df.pth``, then renamed them after the converted file's own SHA-256,
#: ``efficientnet_b0_rwightman-7f5810bc.pth`` (pytorch/vision issues 7744 and 8034).
PRETRAINED_TAGS = {"efficientnet_b0": "ra_in1k"}


def pretrained_name(name: str) -> str:
    """``name`` with its pinned pretrained tag (:data:`PRETRAINED_TAGS`) when it names none."""
    return f"{name}.{PRETRAINED_TAGS[name]}" if name in PRETRAINED_TAGS else name


def check_backbone(name: str, pretrained: bool) -> None:
    """Raise :class:`InstlibError` at once if ``name`` is no model (timm's, or one of :data:`ENCODERS`) or its
    ImageNet weights are out of reach."""
    import timm

    if name in ENCODERS:
        if pretrained:
            raise InstlibError(f"'{name}' is trained from scratch and has no ImageNet weights; pass --no-pretrained "
                               "(pretrained=False)")
        return
    if not timm.is_model(name):
        raise InstlibError(f"'{name}' is not a timm model (for example efficientnet_b0, mobilenetv3_small_050, "
                           f"or test_efficientnet for quick tests) nor one of {', '.join(ENCODERS)}")
    # Offline, fail now rather than after the hub client's retries and timeouts.
    if pretrained and not _weights_cached(pretrained_name(name)) and not _hub_reachable():
        raise InstlibError(f"ImageNet weights for '{name}' are not in the local cache and huggingface.co cannot "
                           "be reached (offline?); run once with internet access to cache them, or pass "
                           "--no-pretrained (pretrained=False) to start from scratch")


def create_backbone(name: str, pretrained: bool, *, features_only: bool = False,
                    drop_path_rate: float = 0.0) -> nn.Module:
    """A ``timm`` feature extractor (or one of :data:`ENCODERS`, from scratch); ImageNet weights if ``pretrained``
    (those of :func:`pretrained_name`).

    Without ``features_only``: the model with no classifier and no pooling (``forward_features``
    gives the last feature map). With it: the model returns the feature map of every stage
    (strides 2 to 32), the skip connections a dense decoder needs.
    """
    import timm

    check_backbone(name, pretrained)
    if name in ENCODERS:
        return create_encoder(name, features_only)
    kwargs = {"features_only": True} if features_only else {"num_classes": 0, "global_pool": ""}
    if drop_path_rate:  # not every timm model takes it; pass it only when asked for
        kwargs["drop_path_rate"] = drop_path_rate
    if not pretrained:
        return timm.create_model(name, pretrained=False, **kwargs)
    try:
        return timm.create_model(pretrained_name(name), pretrained=True, **kwargs)
    except (OSError, RuntimeError, ValueError) as exc:  # download or cache failures
        raise InstlibError(f"cannot load ImageNet weights for '{name}': {exc}; pass --no-pretrained "
                           "(pretrained=False) to start from scratch") from exc


def _weights_cached(name: str) -> bool:
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None:
        return False
    if cfg.hf_hub_id:
        for filename in ("model.safetensors", "pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(cfg.hf_hub_id, filename), str):
                return True
    if cfg.url:
        return (Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url)).is_file()
    return False


def _hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        return True
    except OSError:
        return False
