"""Cell counting: a timm backbone (EfficientNet-B0 by default) regressing the number of cells in a crop.

- :mod:`~instlib.count.model`: backbone + count head (+ density head), safetensors files with metadata
- :mod:`~instlib.count.pipeline`: in-memory images, vectorised crops and counts, batched augmentation
- :mod:`~instlib.count.mix`: CutMix (the authors') and DACS with pseudo-labels, by name
- :mod:`~instlib.count.metrics`: MAE, RMSE, ACP
- :mod:`~instlib.count.recipes`: training recipes by name (the authors', this project's) and LR schedules
- :mod:`~instlib.count.train`: one run (pre-train, fine-tune, select by validation MAE, test, resume)
- :mod:`~instlib.count.predict`: whole-image counts by tiling, centre-crop counts
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
