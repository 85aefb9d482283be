"""The counting models: the paper's count regressor and a density-map counter, by name in :data:`HEADS`.

- ``regression`` (the paper's): a ``timm`` backbone pooled to one count per crop (the authors'
  EfficientNet-B0). With ``density=True`` it also gets a 1x1 convolution on the last feature map
  whose cells hold non-negative counts: DACS needs some density to label the unlabelled part of a
  mixed image.
- ``density`` (:mod:`~instlib.count.decoder`): a ``timm`` encoder with a U-Net decoder regressing a
  Gaussian density map at stride 2-4; the count is the map's sum. A dot-annotated crop supervises
  every pixel instead of one number, which is what lets it learn from a handful of images.

Models are saved as ``safetensors`` (:mod:`instlib.data.tensorfile`) with the :class:`ModelSpec` needed to
rebuild and feed them (:mod:`instlib.count.spec`): head, backbone, channel counts of the training images,
normalisation, intensity scaling and crop size.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from instlib.count.backbone import create_backbone
from instlib.count.decoder import DensityNet
from instlib.count.grid import grid_to_pixels, pool_to_grid
from instlib.count.spec import FORMAT, ModelSpec
from instlib.data.tensorfile import read_tensors, write_tensors
from instlib.errors import InstlibError

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

MODEL_HINT = "use the model.safetensors that 'instlib count train' wrote"


def save_model(model: CountModel, path: str | Path) -> Path:
    """Write weights and :class:`ModelSpec` to a ``.safetensors`` file, atomically."""
    return write_tensors(path, model.state_dict(), {"spec": model.spec.to_json()}, FORMAT)


def read_spec(path: str | Path) -> ModelSpec:
    """The :class:`ModelSpec` stored in a model file (raises if it is not an instlib counting model)."""
    return ModelSpec.from_json(read_tensors(path, FORMAT, "model file", MODEL_HINT, tensors=False)[1]["spec"])


def load_model(path: str | Path, *, backbone: str | None = None, device: str | torch.device = "cpu") -> CountModel:
    """Rebuild a model from its file; ``backbone``, when given, must match the file's."""
    path = Path(path)
    state, meta = read_tensors(path, FORMAT, "model file", MODEL_HINT)
    spec = ModelSpec.from_json(meta["spec"])
    if backbone is not None and backbone != spec.backbone:
        raise InstlibError(f"holds a '{spec.backbone}' model, not '{backbone}'", path)
    model = CountModel(spec, pretrained=False)
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
