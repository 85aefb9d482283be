"""Every stage's settings, one pydantic model each, validated once when made.

- :mod:`~instlib.config.data`: :class:`SynHCConfig` (Syn-HC)
- :mod:`~instlib.config.style`: :class:`PriorConfig`, :class:`TokenTrainingConfig`, :class:`TransferConfig`
- :mod:`~instlib.config.count`: :class:`TrainConfig` (one counting run, with its recipe), :class:`GridConfig`
  (the cross-validation grid)

The stages take these objects; a profile (:mod:`instlib.runs.profiles`) nests them and the command
line builds its options from their fields (:mod:`instlib.cli`). Like :mod:`instlib.errors`, this
package imports nothing else of instlib, so every layer may use it.
"""

from instlib.config.base import Config
from instlib.config.count import GridConfig, TrainConfig
from instlib.config.data import SynHCConfig
from instlib.config.style import PriorConfig, TokenTrainingConfig, TransferConfig

__all__ = ["Config", "GridConfig", "PriorConfig", "SynHCConfig", "TokenTrainingConfig", "TrainConfig",
           "TransferConfig"]
