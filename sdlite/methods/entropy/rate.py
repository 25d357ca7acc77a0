"""The entropy method's rate control: quality 1..100 to a base step, and the finest step whose stream
fits a byte budget (pure numpy)."""

from __future__ import annotations

import numpy as np

from ...errors import OptionError
from .plan import Plan, plan_for_step

QUALITY_MIN, QUALITY_MAX = 1, 100
DEFAULT_QUALITY = 50
STEP_COARSEST, STEP_FINEST = 12.0, 0.2  # base step at quality 1 and 100, geometric in between (50 -> 1.58: about the palette method's size)
STEP_SEARCH_COARSEST = 64.0  # the coarsest step a budget search tries
STEP_SEARCH_FINEST = 1 / 32  # the finest: below quality 100's step, for large budgets on small latents (near-lossless)
TARGET_TOLERANCE = 0.05  # target_bytes: the result lies in [95 %, 100 %] of the target
_SEARCH_STOP = 0.995  # the bisection stops once a fit reaches this fraction of the target
_SEARCH_ITERATIONS = 24


def quality_to_step(quality: int) -> float:
    fraction = (quality - QUALITY_MIN) / (QUALITY_MAX - QUALITY_MIN)
    return STEP_COARSEST * (STEP_FINEST / STEP_COARSEST) ** fraction


def search_budget(latents: np.ndarray, budget: int, *, overhead: int = 0, **options) -> Plan:
    """The finest step in [STEP_SEARCH_FINEST, STEP_SEARCH_COARSEST] whose estimated parameters + payload
    fit `budget` bytes (the target less the container's `overhead`), by bisection on log(step). A budget
    above the finest step's size gets that plan at once (finer steps hold nothing more of the latents)."""
    finest = plan_for_step(latents, STEP_SEARCH_FINEST, **options)
    if finest.estimated_bytes() <= budget:
        return finest
    fine, coarse = np.log(STEP_SEARCH_FINEST), np.log(STEP_SEARCH_COARSEST)
    best = plan_for_step(latents, float(np.exp(coarse)), **options)
    if best.estimated_bytes() > budget:
        raise OptionError(
            f"target_bytes={budget + overhead} is below the smallest stream for this image "
            f"(about {best.estimated_bytes() + overhead} bytes); ask for more"
        )
    for _ in range(_SEARCH_ITERATIONS):
        middle = (fine + coarse) / 2
        plan = plan_for_step(latents, float(np.exp(middle)), **options)
        if plan.estimated_bytes() <= budget:
            best, coarse = plan, middle
        else:
            fine = middle
        if best.estimated_bytes() >= _SEARCH_STOP * budget:
            break
    return best

