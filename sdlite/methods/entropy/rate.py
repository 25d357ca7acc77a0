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


_ASSUMED_SLOPE = -1.5  # d log(bytes) / d log(step) before two sizes are known (about -1 at high rates, steeper at low)


def search_budget(latents: np.ndarray, budget: int, *, overhead: int = 0, **options) -> Plan:
    """The finest step in [STEP_SEARCH_FINEST, STEP_SEARCH_COARSEST] whose estimated parameters + payload
    fit `budget` bytes (the target less the container's `overhead`). Sizes are nearly linear in log(step)
    against log(bytes), so the search starts at quality 50's step, extrapolates until the budget is
    bracketed, then closes in by regula falsi (Illinois); it stops once a fit reaches _SEARCH_STOP of the
    budget: a few plans instead of a bisection's dozen. A budget above the finest step's size gets that
    plan (finer steps hold nothing more of the latents)."""
    finest, coarsest = float(np.log(STEP_SEARCH_FINEST)), float(np.log(STEP_SEARCH_COARSEST))
    if budget < 1:  # not even the parameters fit: name the smallest stream
        smallest = plan_for_step(latents, STEP_SEARCH_COARSEST, **options).estimated_bytes()
        raise OptionError(f"target_bytes={budget + overhead} is below the smallest stream for this image (about {smallest + overhead} bytes); ask for more")
    target = float(np.log(budget * (1 + _SEARCH_STOP) / 2))
    fits = over = None  # [log step, log bytes - target, plan]: the finest step known to fit, the coarsest known not to
    side = None  # which end the last point replaced (Illinois: halve the other end's value when it repeats)
    previous = None
    x = float(np.log(quality_to_step(DEFAULT_QUALITY)))
    for _ in range(_SEARCH_ITERATIONS):
        plan = plan_for_step(latents, float(np.exp(x)), **options)
        size = plan.estimated_bytes()
        point = [x, float(np.log(max(size, 1))) - target, plan]
        if size <= budget:
            if size >= _SEARCH_STOP * budget:
                return plan
            if fits is None or x < fits[0]:
                if side == "fits" and over is not None:
                    over[1] /= 2
                fits, side = point, "fits"
        elif over is None or x > over[0]:
            if side == "over" and fits is not None:
                fits[1] /= 2
            over, side = point, "over"
        if fits is not None and over is not None:
            if abs(fits[0] - over[0]) < 1e-4:
                break
            x_new = over[0] - over[1] * (fits[0] - over[0]) / (fits[1] - over[1])
            if not min(fits[0], over[0]) < x_new < max(fits[0], over[0]):
                x_new = (fits[0] + over[0]) / 2
        else:
            slope = _ASSUMED_SLOPE
            if previous is not None and abs(point[0] - previous[0]) > 1e-9:
                slope = min(-0.2, (point[1] - previous[1]) / (point[0] - previous[0]))
            x_new = point[0] - point[1] / slope
            if fits is not None:  # everything so far fits: finer, down to the finest step
                if point[0] <= finest:
                    break
                x_new = max(finest, x_new)
            else:  # nothing fits yet: coarser, up to the coarsest step
                if point[0] >= coarsest:
                    raise OptionError(
                        f"target_bytes={budget + overhead} is below the smallest stream for this image "
                        f"(about {size + overhead} bytes); ask for more"
                    )
                x_new = min(coarsest, x_new)
        previous, x = point, x_new
    if fits is None:
        raise OptionError(f"target_bytes={budget + overhead} could not be reached for this image; ask for more")
    return fits[2]
