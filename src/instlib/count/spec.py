"""What a saved counting model is: :class:`ModelSpec`, stored beside its weights, and the named normalisations."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from instlib.config.count import HEADS
from instlib.errors import InstlibError

FORMAT = "instlib.count/2"  # /2: the metadata holds a checksum of the weights

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
    count_scales: tuple[int, ...] = (1,)  # density only: that error also on n x n parts of each crop, for each n
    out_stride: int = 2  # density only: stride of the output map (an encoder stride: 2, 4, ...)
    decoder_width: int = 32  # density only: channels of the decoder
    intensity_percentile: float | None = None  # per-image scaling before the model (see count.bank.scale_intensity)
    drop_rate: float = 0.0  # regression only: dropout before the count head (torchvision's EfficientNet-B0: 0.2)
    drop_path_rate: float = 0.0  # stochastic depth of the backbone's blocks (torchvision's EfficientNet-B0: 0.2)

    def __post_init__(self):
        if self.head not in HEADS:  # the names of instlib.count.model.HEADS
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
        tuples = {k: tuple(d[k]) for k in ("channels", "mean", "std", "count_scales") if k in d}
        return cls(**{**d, **tuples})
