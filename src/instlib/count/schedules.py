"""What a recipe's named choices do: learning-rate schedules and which epoch a stage keeps.

The names are those of :mod:`instlib.config.count` (``SCHEDULES``, ``KEEP``), where a configuration
is checked; the recipes themselves are settings and live there too.
"""

from __future__ import annotations

import math
from collections.abc import Callable

# Learning-rate factor as a function of (epochs done, with fractions within an epoch; epochs of the stage).
SCHEDULES: dict[str, Callable[[float, int], float]] = {
    "poly": lambda done, total: (1.0 - done / total) ** 0.9,
    "cosine": lambda done, total: 0.5 * (1.0 + math.cos(math.pi * done / total)),
    "step": lambda done, total: 0.1 ** math.floor(3 * done / total),  # x0.1 after each third of the stage
    "steplr10": lambda done, total: 0.1 ** (int(done) // 10),  # torch StepLR(10, 0.1), stepped per epoch
    "constant": lambda done, total: 1.0,
}

# Which epoch a stage keeps: whether a new epoch replaces the kept one, given (its validation MAE, the kept one's).
KEEP: dict[str, Callable[[float, float], bool]] = {
    "best": lambda mae, kept: mae < kept,  # the lowest validation MAE (the authors' min_loss)
    "last": lambda mae, kept: True,  # the last epoch; validation is recorded, not used to choose
}
