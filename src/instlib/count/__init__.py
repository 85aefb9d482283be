"""Cell counting: the paper's count regressor (EfficientNet-B0 by default) or a density-map counter.

- :mod:`~instlib.count.model`: the heads (``regression``, ``density``), safetensors files with metadata
- :mod:`~instlib.count.decoder`: the density counter's U-Net decoder on a ``timm`` encoder
- :mod:`~instlib.count.backbone`, :mod:`~instlib.count.grid`: timm backbones; sum-preserving grid pooling
- :mod:`~instlib.count.pipeline`: in-memory images, vectorised crops and counts, batched augmentation
- :mod:`~instlib.count.mix`: CutMix (the authors') and DACS with pseudo-labels, by name
- :mod:`~instlib.count.metrics`: MAE, RMSE, ACP
- :mod:`~instlib.count.recipes`: training recipes by name (the authors', this project's) and LR schedules
- :mod:`~instlib.count.train`: one run (pre-train, fine-tune, select by validation MAE, test, resume)
- :mod:`~instlib.count.predict`: whole-image counts by tiling, blended density maps, centre-crop counts
- :mod:`~instlib.count.classical`: Gaussian smoothing + local maxima, fitted on the training images
- :mod:`~instlib.count.cv`: stratified k-fold cross-validation over sources x mixing x seeds
"""

from instlib.count import metrics
from instlib.count.cv import cross_validate, summarize
from instlib.count.mix import MIXES
from instlib.count.model import CountModel, ModelSpec, load_model, save_model
from instlib.count.predict import count_bank, predict
from instlib.count.train import TrainConfig, train_run

__all__ = [
    "metrics", "cross_validate", "summarize", "MIXES", "CountModel", "ModelSpec", "load_model", "save_model",
    "count_bank", "predict", "TrainConfig", "train_run",
]
