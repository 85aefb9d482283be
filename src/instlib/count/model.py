"""The counting models: the paper's count regressor and a density-map counter, by name in :data:`HEADS`.

- ``regression`` (the paper's): a ``timm`` backbone pooled to one count per crop (the authors'
  EfficientNet-B0). With ``density=True`` it also gets a 1x1 convolution on the last feature map
  whose cells hold non-negative counts: DACS needs some density to label the unlabelled part of a
  mixed image.
- ``density`` (:mod:`~instlib.count.decoder`): a ``timm`` encoder with a U-Net decoder regressing a
  Gaussian density map at stride 2-4; the count is the map's sum. A dot-annotated crop supervises
  every pixel instead of one number, which is what lets it learn from a handful of images.

Models are saved as ``safetensors`` with the metadata needed to rebuild and feed them: head,
backbone, channel counts of the training images, normalisation, intensity scaling and crop size.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from instlib.count.backbone import create_backbone
from instlib.count.decoder import DensityNet
from instlib.count.grid import grid_to_pixels, pool_to_grid
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
    head: str = "regression"  # a key of HEADS
    density: bool = False  # regression only: add the 1x1 density helper (DACS pseudo-labels)
    sigma: float = 4.0  # density only: std in pixels of the Gaussian around each point in the targets
    density_scale: float = 100.0  # density only: targets and outputs are scaled by this in the loss
    count_weight: float = 0.01  # density only: weight of the crop counts' absolute error in the loss
    out_stride: int = 2  # density only: stride of the output map (an encoder stride: 2, 4, ...)
    decoder_width: int = 32  # density only: channels of the decoder
    intensity_percentile: float | None = None  # per-image scaling before the model (see pipeline.scale_intensity)
    drop_rate: float = 0.0  # regression only: dropout before the count head (torchvision's EfficientNet-B0: 0.2)
    drop_path_rate: float = 0.0  # stochastic depth of the backbone's blocks (torchvision's EfficientNet-B0: 0.2)

    def __post_init__(self):
        if self.head not in HEADS:
            raise InstlibError(f"unknown counting head '{self.head}'; choose one of {', '.join(HEADS)}")

    @property
    def has_density(self) -> bool:
        """Whether the model outputs a density map (whose sums are counts)."""
        return self.head == "density" or self.density

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> ModelSpec:
        d = json.loads(text)
        return cls(**{**d, "channels": tuple(d["channels"]), "mean": tuple(d["mean"]), "std": tuple(d["std"])})


class RegressionNet(nn.Module):
    """The paper's counter: pooled backbone features -> one count; the optional density helper beside it."""

    def __init__(self, spec: ModelSpec, pretrained: bool):
        super().__init__()
        self.backbone = create_backbone(spec.backbone, pretrained, drop_path_rate=spec.drop_path_rate)
        width = self.backbone.num_features
        self.dropout = nn.Dropout(spec.drop_rate)
        self.head = nn.Linear(width, 1)
        self.density_head = nn.Conv2d(width, 1, kernel_size=1) if spec.density else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        # forward_features gives the last feature map with num_features channels for every timm
        # backbone; calling the model would also run heads such as MobileNetV3's conv_head.
        feats = self.backbone.forward_features(x)
        count = self.head(self.dropout(feats.mean(dim=(2, 3)))).squeeze(1)
        density = F.softplus(self.density_head(feats)) if self.density_head is not None else None
        return count, density

    def loss(self, count: torch.Tensor, density: torch.Tensor | None, label_map: torch.Tensor) -> torch.Tensor:
        """MSE on the count (the authors' loss), plus MSE on per-cell counts when there is a density head."""
        loss = F.mse_loss(count.float(), label_map.sum(dim=(1, 2, 3)))
        if density is not None:
            loss = loss + F.mse_loss(density.float(), pool_to_grid(label_map, density.shape[-2:]))
        return loss

    @torch.no_grad()
    def init_count(self, mean_count: float, crop_size: int) -> None:
        """Start the regression at the mean crop count: otherwise the first MSE gradients are all offset."""
        self.head.bias.fill_(mean_count)


HEADS: dict[str, type[nn.Module]] = {"regression": RegressionNet, "density": DensityNet}


class CountModel(nn.Module):
    """``forward(x)`` with ``x`` float ``(B, 3, S, S)`` in ``[0, 1]`` gives ``(count (B,), density | None)``.

    Normalisation happens inside, with the statistics stored in :attr:`spec`, so saved models are
    self-contained. ``density`` is ``(B, 1, h, w)`` on the head's output grid (stride 32 for the
    regression head's helper, ``out_stride`` for the density head), in cells per grid cell.
    """

    def __init__(self, spec: ModelSpec, pretrained: bool = False):
        super().__init__()
        self.spec = spec
        self.net = HEADS[spec.head](spec, pretrained)
        # Not persistent: the statistics live in the file's metadata, not among the weights.
        self.register_buffer("mean", torch.tensor(spec.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(spec.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.net((x - self.mean) / self.std)

    def loss(self, x: torch.Tensor, label_map: torch.Tensor) -> torch.Tensor:
        """The head's loss on crops ``x``; ``label_map`` ``(B, 1, S, S)`` sums to each crop's count.

        It is a dot map (regression), a Gaussian density map (density), or a mixed map whose
        unlabelled part holds pseudo-labels.
        """
        return self.net.loss(*self(x), label_map)

    def init_count(self, mean_count: float) -> None:
        """Make the untrained model predict about ``mean_count`` cells per crop."""
        self.net.init_count(mean_count, self.spec.crop_size)

    def density_map(self, x: torch.Tensor) -> torch.Tensor:
        """The density prediction spread back onto the pixels of ``x``, ``(B, 1, S, S)``, same sums."""
        _, density = self(x)
        if density is None:
            raise InstlibError(f"the {self.spec.backbone} model has no density output; train it with "
                               "head='density' (or density=True)")
        return grid_to_pixels(density.float(), x.shape[-2:])


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
