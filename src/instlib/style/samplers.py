"""The decoding samplers by name: the reference's DDIM, and multistep solvers that need fewer steps.

Every entry builds a fresh scheduler from a model's scheduler config (its betas, grid spacing and step
offset), so all samplers decode on the same noise schedule and timestep grid. The multistep solvers
(DPM-Solver++ and UniPC, both second order) keep the model outputs of earlier steps in the scheduler:
a scheduler is built per call, so a result depends only on its inputs and seed, never on what ran
before it. Their first step is first order (no history yet), which is what a decode that starts
mid-grid at ``t_enc`` needs.
"""

from __future__ import annotations

from collections.abc import Callable

from diffusers import (
    DDIMScheduler,
    DPMSolverMultistepScheduler,
    UniPCMultistepScheduler,
)
from diffusers.schedulers.scheduling_utils import SchedulerMixin

#: Samplers by name: ``scheduler config -> fresh scheduler`` (names mirrored in ``instlib.config.style.SAMPLERS``).
SAMPLERS: dict[str, Callable[[dict], SchedulerMixin]] = {
    "ddim": lambda config: DDIMScheduler.from_config(config),
    "dpmpp": lambda config: DPMSolverMultistepScheduler.from_config(config, algorithm_type="dpmsolver++",
                                                                    solver_order=2),
    "unipc": lambda config: UniPCMultistepScheduler.from_config(config, solver_order=2),
}


def make_sampler(name: str, config: dict) -> SchedulerMixin:
    """A fresh scheduler of sampler ``name`` on the noise schedule of ``config``."""
    return SAMPLERS[name](config)
