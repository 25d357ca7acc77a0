"""Coded resolution: below a few bits per latent cell, a smaller image's latent decodes better.

Quantizing a latent coarsely makes a generative decoder invent blotches (TAESD at half the palette
method's bytes: LPIPS-alex 0.354); coding the image at 1/1.5 of its size and scaling the decoded image
back up spends the same bytes on fewer, finer latent values (0.243 there). Measured on Kodak with TAESD
and VAElight (BENCHMARKS.md), the best reduction keeps the budget near BITS_PER_CELL bits per latent
cell: `scale = sqrt(BITS_PER_CELL / bits per cell at full size)`, in eighths, from 1 to MAX_AUTO_SCALE.
The rule reads only the budget and the latent's size, never the decoder.
"""

from __future__ import annotations

import math

import numpy as np

from .bitstream import CONTAINER_OVERHEAD, MAX_SCALE, SCALE_UNIT
from .errors import OptionError

AUTO = "auto"
BITS_PER_CELL = 7.0
"""Budget per full-size latent cell below which the image is coded smaller (measured: BENCHMARKS.md)."""
MAX_AUTO_SCALE = 2.0
"""The automatic rule never codes an image more than 2x smaller per side."""


def check_scale(scale) -> None:
    if scale == AUTO:
        return
    if isinstance(scale, bool) or not isinstance(scale, (int, float, np.integer, np.floating)) or not (
        1.0 <= float(scale) <= MAX_SCALE / SCALE_UNIT
    ):
        raise OptionError(f"scale must be 'auto' or a number from 1 to {MAX_SCALE / SCALE_UNIT:g}, got {scale!r}")


def scale_byte(scale) -> int:
    """A scale factor (1 .. 4) as the stream's byte: eighths, rounded."""
    check_scale(scale)
    return int(min(MAX_SCALE, max(SCALE_UNIT, round(float(scale) * SCALE_UNIT))))


def scale_for_budget(budget_bits: float, cells: int) -> int:
    """The rule: the stream's scale byte for a budget of `budget_bits` over `cells` full-size latent cells."""
    per_cell = budget_bits / max(cells, 1)
    if per_cell >= BITS_PER_CELL:
        return SCALE_UNIT
    wanted = math.sqrt(BITS_PER_CELL / max(per_cell, 1e-9))
    return scale_byte(min(MAX_AUTO_SCALE, wanted))


def choose_scale(method, latents: np.ndarray, *, target_bytes: int | None, quality: int | None) -> tuple[int, int | None]:
    """(scale byte, target_bytes) for this image's full-size latents. Fixed-rate methods stay at full
    size. The budget is target_bytes, or the size the method estimates for `quality` at full size; a
    reduced scale then codes to that size (so quality keeps ordering sizes), and is returned as the
    target_bytes to use."""
    if method.estimate_bytes is None:
        return SCALE_UNIT, target_bytes
    budget = target_bytes - CONTAINER_OVERHEAD if target_bytes is not None else method.estimate_bytes(latents, quality=quality)
    scale = scale_for_budget(8.0 * budget, latents.shape[1] * latents.shape[2])
    if scale == SCALE_UNIT or target_bytes is not None:
        return scale, target_bytes
    return scale, budget + CONTAINER_OVERHEAD
