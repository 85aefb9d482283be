"""Cell counting: the paper's count regressor (EfficientNet-B0 by default) or a density-map counter.

One run, read top to bottom (:func:`train_run`):

- :mod:`~instlib.count.inputs`: list the folders, leave out images drawn from test images, decode once
- :mod:`~instlib.count.bank`: the decoded images and their points in memory
- :mod:`~instlib.count.batches`, :mod:`~instlib.count.augment`: labelled random crops, augmented on tensors
- :mod:`~instlib.count.model` (heads by name), :mod:`~instlib.count.spec` (what a saved model is),
  :mod:`~instlib.count.decoder` (the density counter's U-Net decoder), :mod:`~instlib.count.backbone`,
  :mod:`~instlib.count.grid` (sum-preserving grid pooling)
- :mod:`~instlib.count.mix`: CutMix (the authors') and DACS with pseudo-labels, by name
- :mod:`~instlib.count.loop`: stages, epochs, validation, checkpoints; :mod:`~instlib.count.schedules`
- :mod:`~instlib.count.predict`: whole-image counts by tiling, blended density maps, centre-crop counts
- :mod:`~instlib.count.metrics`: MAE, RMSE, ACP
- :mod:`~instlib.count.train`: one run; :mod:`~instlib.count.cv`: the grid sources x mixing x folds x seeds
- :mod:`~instlib.count.classical`: Gaussian smoothing + local maxima, fitted on the training images
- :mod:`~instlib.count.compare`: paired per-image comparisons of CV rows or of single runs

Settings: :class:`~instlib.config.count.TrainConfig` (one run, with its recipe) and
:class:`~instlib.config.count.GridConfig` (the grid); the folders a run writes: :mod:`instlib.runs.folders`.
"""

from instlib.config.count import GridConfig, TrainConfig
from instlib.count import metrics
from instlib.count.compare import compare, compare_runs
from instlib.count.cv import cross_validate, summarize
from instlib.count.mix import MIXES
from instlib.count.model import CountModel, load_model, save_model
from instlib.count.predict import count_bank, predict
from instlib.count.spec import ModelSpec
from instlib.count.train import train_run

__all__ = [
    "metrics", "compare", "compare_runs", "cross_validate", "summarize", "MIXES", "CountModel", "GridConfig", "ModelSpec", "load_model",
    "save_model", "count_bank", "predict", "TrainConfig", "train_run",
]
