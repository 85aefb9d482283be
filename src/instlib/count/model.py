"""The counting model: a ``timm`` backbone with a count-regression head and an optional density head.

The count head regresses the number of cells in a crop from globally pooled features (as the
authors' EfficientNet-B0 does). The density head is a 1x1 convolution on the last feature map
whose cells hold non-negative counts, so the count of any region is the sum of the density over
it; DACS needs that to label the unlabelled part of a mixed image.

Models are saved as ``safetensors`` with the metadata needed to rebuild and feed them: backbone,
channel counts of the training images, normalisation and crop size.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from instlib.data.atomic import atomic_path
from instlib.errors import InstlibError

FORMAT = "instlib.count/1"

# Normalisation statistics by name; "data" (computed from the training images) is handled by the caller.
NORMS: dict[str, tuple[tuple[float, float, float], tuple[float, float, float]]] = {
    # The authors' IDCIA statistics: the fluorescence images are dark.
    "idcia": ((0.0414,) * 3, (0.0203,) * 3),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a counting model and feed it images."""

    backbone: str = "efficientnet_b0"
    channels: tuple[int, ...] = (3,)  # channel counts of the images it was trained on (1 = grayscale)
    mean: tuple[float, float, float] = NORMS["imagenet"][0]
    std: tuple[float, float, float] = NORMS["imagenet"][1]
    crop_size: int = 200
    density: bool = False
    drop_rate: float = 0.0  # dropout before the count head (torchvision's EfficientNet-B0: 0.2)
    drop_path_rate: float = 0.0  # stochastic depth of the backbone's blocks (torchvision's: 0.2)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        d = json.loads(text)
        return cls(**{**d, "channels": tuple(d["channels"]), "mean": tuple(d["mean"]), "std": tuple(d["std"])})


class CountModel(nn.Module):
    """``forward(x)`` with ``x`` float ``(B, 3, S, S)`` in ``[0, 1]`` gives ``(count (B,), density | None)``.

    Normalisation happens inside, with the statistics stored in :attr:`spec`, so saved models are
    self-contained. ``density`` is ``(B, 1, h, w)`` on the backbone's last feature grid.
    """

    def __init__(self, spec: ModelSpec, pretrained: bool = False):
        super().__init__()
        self.spec = spec
        self.backbone = create_backbone(spec.backbone, pretrained, drop_path_rate=spec.drop_path_rate)
        width = self.backbone.num_features
        self.dropout = nn.Dropout(spec.drop_rate)
        self.head = nn.Linear(width, 1)
        self.density_head = nn.Conv2d(width, 1, kernel_size=1) if spec.density else None
        # Not persistent: the statistics live in the file's metadata, not among the weights.
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        # forward_features gives the last feature map with num_features channels for every timm
        # backbone; calling the model would also run heads such as MobileNetV3's conv_head.
        feats = self.backbone.forward_features((x - self.mean) / self.std)
        count = self.head(self.dropout(feats.mean(dim=(2, 3)))).squeeze(1)
        density = F.softplus(self.density_head(feats)) if self.density_head is not None else None
        return count, density

    def loss(self, x: torch.Tensor, label_map: torch.Tensor) -> torch.Tensor:
        """MSE on the count (the authors' loss), plus MSE on per-cell counts when there is a density head.

        ``label_map`` is ``(B, 1, S, S)`` and sums to each crop's count: a dot map, or a mixed map
        whose unlabelled part holds pseudo-labels.
        """
        count, density = self(x)
        target = label_map.sum(dim=(1, 2, 3))
        loss = F.mse_loss(count.float(), target)
        if density is not None:
            loss = loss + F.mse_loss(density.float(), pool_to_grid(label_map, density.shape[-2:]))
        return loss

    def density_map(self, x: torch.Tensor) -> torch.Tensor:
        """The density prediction spread back onto the pixels of ``x``, ``(B, 1, S, S)``, same sums."""
        _, density = self(x)
        if density is None:
            raise InstlibError(f"the {self.spec.backbone} model has no density head; train it with density=True")
        return grid_to_pixels(density.float(), x.shape[-2:])


def _cells(size: int, cells: int, device) -> torch.Tensor:
    """Cell index of each pixel along one axis: pixel ``p`` of ``size`` belongs to cell ``p * cells // size``."""
    return torch.arange(size, device=device) * cells // size


def pool_to_grid(maps: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Sum ``(B, 1, H, W)`` pixel maps into ``(B, 1, h, w)`` cells that partition the image exactly.

    (Adaptive average pooling would let neighbouring cells share pixels and break the sums.)
    """
    (h, w), (H, W) = grid, maps.shape[-2:]
    rows = F.one_hot(_cells(H, h, maps.device), h).to(maps.dtype)  # (H, h)
    cols = F.one_hot(_cells(W, w, maps.device), w).to(maps.dtype)  # (W, w)
    return rows.T @ maps @ cols


def grid_to_pixels(cells: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Spread each cell's value evenly over its pixels: the inverse of :func:`pool_to_grid` for sums."""
    (h, w), (H, W) = cells.shape[-2:], size
    r, c = _cells(H, h, cells.device), _cells(W, w, cells.device)
    area = torch.bincount(r, minlength=h)[:, None] * torch.bincount(c, minlength=w)[None, :]
    return (cells / area.to(cells.dtype))[..., r[:, None], c[None, :]]


# ---------------------------------------------------------------- backbones


def check_backbone(name: str, pretrained: bool) -> None:
    """Raise :class:`InstlibError` at once if ``name`` is no timm model or its ImageNet weights are out of reach."""
    import timm

    if not timm.is_model(name):
        raise InstlibError(f"'{name}' is not a timm model (for example efficientnet_b0, mobilenetv3_small_050, "
                           "or test_efficientnet for quick tests)")
    # Offline, fail now rather than after the hub client's retries and timeouts.
    if pretrained and not _weights_cached(name) and not _hub_reachable():
        raise InstlibError(f"ImageNet weights for '{name}' are not in the local cache and huggingface.co cannot "
                           "be reached (offline?); run once with internet access to cache them, or pass "
                           "--no-pretrained (pretrained=False) to start from scratch")


def create_backbone(name: str, pretrained: bool, drop_path_rate: float = 0.0) -> nn.Module:
    """A ``timm`` feature extractor (no classifier, no pooling); ImageNet weights if ``pretrained``."""
    import timm

    check_backbone(name, pretrained)
    # Not every timm model takes drop_path_rate; pass it only when asked for.
    kwargs = {"drop_path_rate": drop_path_rate} if drop_path_rate else {}
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=0, global_pool="", **kwargs)
    try:
        return timm.create_model(name, pretrained=True, num_classes=0, global_pool="", **kwargs)
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


# ---------------------------------------------------------------- files


def save_model(model: CountModel, path: str | Path) -> Path:
    """Write weights and :class:`ModelSpec` to a ``.safetensors`` file, atomically."""
    from safetensors.torch import save_file

    path = Path(path)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT, "spec": model.spec.to_json()})
    return path


def read_spec(path: str | Path) -> ModelSpec:
    """The :class:`ModelSpec` stored in a model file (raises if it is not an instlib counting model)."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise InstlibError("no such model file", path)
    try:
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
    except (SafetensorError, OSError) as exc:
        raise InstlibError(f"cannot be read as a safetensors file: {exc}", path) from exc
    if meta.get("format") != FORMAT or "spec" not in meta:
        raise InstlibError("is not an instlib counting model (no 'instlib.count' metadata); "
                           "use the model.safetensors that 'instlib count train' wrote", path)
    return ModelSpec.from_json(meta["spec"])


def load_model(path: str | Path, *, backbone: str | None = None, device: str | torch.device = "cpu") -> CountModel:
    """Rebuild a model from its file; ``backbone``, when given, must match the file's."""
    from safetensors.torch import load_file

    path = Path(path)
    spec = read_spec(path)
    if backbone is not None and backbone != spec.backbone:
        raise InstlibError(f"holds a '{spec.backbone}' model, not '{backbone}'", path)
    model = CountModel(spec, pretrained=False)
    state = load_file(str(path))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    reshaped = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or reshaped:
        raise InstlibError(f"its weights do not fit its declared backbone '{spec.backbone}' "
                           f"({len(missing)} tensors missing, e.g. {missing[:2]}; {len(unexpected)} unexpected, "
                           f"e.g. {unexpected[:2]}; {len(reshaped)} of another shape, e.g. {reshaped[:2]}); "
                           "the file was written for another architecture or is damaged", path)
    model.load_state_dict(state)
    return model.to(device)
