"""The entropy method's rate control: quality 1..100 to a base step, and the finest step whose stream
fits a byte budget (pure numpy)."""

from __future__ import annotations

from typing import Callable

import numpy as np

from ...errors import OptionError
from .context import SYMBOL_LIMIT
from .params import MEAN_SCALE
from .plan import STEP_Q_MAX, Plan, plan_for_step
from .transform import DEFAULT_BAND_GAINS, DEFAULT_LEVELS, GAIN_SCALE, STEP_SCALE, decompose, group_steps

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


def _size_model(coded: np.ndarray, band_gains=DEFAULT_BAND_GAINS, levels: int = DEFAULT_LEVELS) -> Callable[[float], float]:
    """log(payload bytes) at a log base step, from each plane's zeroth-order entropy of its symbols or of their
    differences along rows, whichever is smaller (the Plan's quantization without its context model): 1-7 ms
    where a Plan of 32 x 64 x 96 latents takes a tenth of a second or more. The Plan's payload is 0.84-1.00
    of it on TAESD, TAESD3 and TAEF2 latents of Kodak kodim01/05/08 over steps 0.3-4, drifting by at most
    5 % between those steps, so the search corrects the model by its error at the latest Plans."""
    gains_q = tuple(int(np.clip(round(g * GAIN_SCALE), 1, 255)) for g in band_gains)
    groups = decompose(coded.astype(np.float64), levels)
    centred = []
    for group in groups:  # the Plan's means (integers in the stream), so symbols match its symbols
        means_q = np.clip(np.rint(group.reshape(len(group), -1).mean(axis=1) * MEAN_SCALE), -32768, 32767)
        centred.append(group - (means_q / MEAN_SCALE)[:, None, None])
    memo: dict[int, float] = {}

    def log_bytes(x: float) -> float:
        step_q = _step_q(x)
        if step_q not in memo:
            bits = 0.0
            for values, steps in zip(centred, group_steps(step_q, gains_q, levels, coded.shape[0])):
                symbols = np.clip(np.rint(values / steps[:, None, None]), -SYMBOL_LIMIT, SYMBOL_LIMIT).astype(np.int64)
                # each plane's cheaper of its symbols and their differences along rows: the context model
                # predicts from neighbours, which pays on smooth planes
                across = symbols.copy()
                across[:, :, 1:] -= symbols[:, :, :-1]
                bits += float(np.minimum(_entropy_bits(symbols.reshape(len(symbols), -1)),
                                         _entropy_bits(across.reshape(len(symbols), -1))).sum())
            memo[step_q] = float(np.log(max(bits / 8, 1.0)))
        return memo[step_q]

    return log_bytes


def _entropy_bits(symbols: np.ndarray) -> np.ndarray:
    """Per row of a (planes, n) integer array, n times its zeroth-order entropy in bits: one bincount when
    the rows' value ranges are narrow, else sorted runs (memory bounded by the array either way)."""
    planes, n = symbols.shape
    shifted = symbols - symbols.min(axis=1, keepdims=True)
    width = int(shifted.max()) + 1
    if width * planes <= 4 * shifted.size:
        counts = np.bincount((shifted + width * np.arange(planes)[:, None]).ravel(), minlength=width * planes).reshape(planes, width)
    else:
        ordered = np.sort(shifted, axis=1)
        starts = np.ones(ordered.shape, dtype=bool)
        starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
        flat = np.flatnonzero(starts.ravel())
        run_lengths = np.diff(np.append(flat, ordered.size))  # a run never spans two rows: each row starts one
        counts = np.zeros((planes, n), dtype=np.int64)
        rows, within = np.divmod(flat, n)
        counts[rows, within] = run_lengths
    counts = counts.astype(np.float64)
    logs = np.log2(np.where(counts > 0, counts, 1.0))
    return n * np.log2(n) - (counts * logs).sum(axis=1)


def _step_q(x: float) -> int:
    return int(np.clip(round(float(np.exp(x)) * STEP_SCALE), 1, STEP_Q_MAX))


def _solve(f: Callable[[float], float], low: float, high: float) -> float:
    """x in [low, high] where the decreasing f crosses 0 (Illinois regula falsi, to 0.1 % of the size);
    an end where f does not change sign."""
    f_low, f_high = f(low), f(high)
    if f_low <= 0:
        return low
    if f_high >= 0:
        return high
    side = 0
    for _ in range(_MODEL_ITERATIONS):
        x = high - f_high * (high - low) / (f_high - f_low)
        value = f(x)
        if abs(value) < _MODEL_TOLERANCE:
            return x
        if value > 0:
            low, f_low = x, value
            if side == 1:
                f_high /= 2
            side = 1
        else:
            high, f_high = x, value
            if side == -1:
                f_low /= 2
            side = -1
    return x


_MODEL_ITERATIONS = 12
_MODEL_TOLERANCE = 1e-3  # in log bytes


def search_budget(latents: np.ndarray, budget: int, *, overhead: int = 0, **options) -> Plan:
    """The finest step in [STEP_SEARCH_FINEST, STEP_SEARCH_COARSEST] whose estimated parameters + payload
    fit `budget` bytes (the target less the container's `overhead`), within _SEARCH_STOP of it. Plans are
    the cost (a tenth of a second each for 32 x 64 x 96 latents), so the first _MODEL_PLANS steps are
    proposed by a cheap size model (_size_model, with the latest Plan's parameter bytes, its error at the
    last two Plans corrected by a secant): on Kodak latents the first or second Plan is usually the answer.
    Then, or when a proposal repeats a step, regula falsi (Illinois) on the Plans' own sizes closes the
    bracket. It stops once the bracket's two sizes are within _SEARCH_STOP of each other (no step between
    them does better). A budget above the finest step's size gets that plan."""
    finest, coarsest = float(np.log(STEP_SEARCH_FINEST)), float(np.log(STEP_SEARCH_COARSEST))
    if budget < 1:  # not even the parameters fit: name the smallest stream
        smallest = plan_for_step(latents, STEP_SEARCH_COARSEST, **options).estimated_bytes()
        raise OptionError(f"target_bytes={budget + overhead} is below the smallest stream for this image (about {smallest + overhead} bytes); ask for more")
    target = float(np.log(budget * (1 + _SEARCH_STOP) / 2))
    model = _size_model(latents, options.get("band_gains", DEFAULT_BAND_GAINS), options.get("levels", DEFAULT_LEVELS))
    fits = over = None  # [log step, log size - target, plan]: the finest step known to fit, the coarsest known not to
    side = None  # which end the last Plan replaced (Illinois: halve the other end's value when it repeats)
    tried: set[int] = set()
    points: list[tuple[float, float]] = []  # (log step, log size) of each Plan
    fixed = 0.0  # the latest Plan's parameter bytes
    x = _solve(lambda t: model(t) - target, finest, coarsest)
    for _ in range(_SEARCH_ITERATIONS):
        tried.add(_step_q(x))
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
            if x <= finest:
                break  # the finest step fits: nothing finer to try
        else:
            if over is None or x > over[0]:
                if side == "over" and fits is not None:
                    fits[1] /= 2
                over, side = point, "over"
            if x >= coarsest:
                raise OptionError(f"target_bytes={budget + overhead} is below the smallest stream for this image "
                                  f"(about {size + overhead} bytes); ask for more")
        if fits is not None and over is not None and over[2].estimated_bytes() - fits[2].estimated_bytes() <= max(4, (1 - _SEARCH_STOP) * budget):
            break  # nothing between the two does better than the finer fit
        points.append((x, float(np.log(max(size, 1)))))
        # the parameters (means, predictor weights, decays) hardly change with the step, the payload does:
        # the model prices the payload, the latest Plan the parameters
        fixed = float(len(plan.params().pack()))
        low = over[0] if over is not None else finest
        high = fits[0] if fits is not None else coarsest
        bracketed = fits is not None and over is not None
        if not bracketed or len(points) < _MODEL_PLANS:
            x_new = _solve(_corrected(model, fixed, points, target), low, high)
            if _step_q(x_new) in tried and not bracketed:  # the model insists on a step that missed: a nudge
                step_q = _step_q(x)
                moved = step_q + (1 if over is not None else -1) * max(1, round(step_q * _NUDGE))
                x_new = float(np.clip(np.log(max(moved, 1) / STEP_SCALE), finest, coarsest))
                if _step_q(x_new) in tried:
                    break  # pinned at an end of the step range
        if bracketed and (len(points) >= _MODEL_PLANS or _step_q(x_new) in tried or not low < x_new < high):
            x_new = over[0] - over[1] * (fits[0] - over[0]) / (fits[1] - over[1])
            if not low < x_new < high or _step_q(x_new) in tried:
                x_new = (low + high) / 2
            if _step_q(x_new) in tried:
                break  # no untried step between the known ones
        x = x_new
    if fits is None:
        raise OptionError(f"target_bytes={budget + overhead} could not be reached for this image; ask for more")
    return fits[2]


_MODEL_PLANS = 3  # Plans whose successor the size model proposes; regula falsi on real sizes after that
_NUDGE = 0.02  # 2 % of the step (at least one unit), when the model proposes again a step that missed and nothing brackets the target


def _corrected(model: Callable[[float], float], fixed: float, points: list[tuple[float, float]], target: float) -> Callable[[float], float]:
    """log size - target as the model predicts it: the payload model plus `fixed` parameter bytes, plus the
    model's error at the latest Plan, sloped as between the last two Plans."""
    def total(t: float) -> float:
        return float(np.log(fixed + np.exp(model(t))))

    (x0, size0) = points[-1]
    (x1, size1) = points[-2] if len(points) > 1 else points[-1]
    error0, error1 = size0 - total(x0), size1 - total(x1)
    drift = (error0 - error1) / (x0 - x1) if abs(x0 - x1) > 1e-9 else 0.0
    return lambda t: total(t) + error0 + drift * (t - x0) - target
