"""Coded resolution: below a few bits per latent cell, a smaller image's latent decodes better.

Quantizing a latent coarsely makes a generative decoder invent blotches (TAESD at half the palette
method's bytes: LPIPS-alex 0.354); coding the image at 1/1.5 of its size and scaling the decoded image
back up spends the same bytes on fewer, finer latent values (0.243 there). Measured on Kodak with the
real decoders of each latent space (BENCHMARKS.md), the best reduction keeps the budget near the space's
bits_per_cell bits per latent cell (sdlite.latent_space; BITS_PER_CELL for unknown spaces):
`scale = sqrt(bits_per_cell / bits per cell at full size)`, in eighths, from 1 to MAX_AUTO_SCALE. The
rule reads only the budget, the latent's size and its space, never the decoder.
"""

from __future__ import annotations

import math

import numpy as np

from .bitstream import CONTAINER_OVERHEAD, MAX_SCALE, SCALE_UNIT
from .errors import OptionError
from .latent_space import DEFAULT_BITS_PER_CELL

AUTO = "auto"
BITS_PER_CELL = DEFAULT_BITS_PER_CELL
"""Budget per full-size latent cell below which the image is coded smaller, for spaces without a
measurement of their own (first measured on SD 1.x: BENCHMARKS.md)."""
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


def scale_for_budget(budget_bits: float, cells: int, bits_per_cell: float = BITS_PER_CELL) -> int:
    """The rule: the stream's scale byte for a budget of `budget_bits` over `cells` full-size latent cells."""
    per_cell = budget_bits / max(cells, 1)
    if per_cell >= bits_per_cell:
        return SCALE_UNIT
    wanted = math.sqrt(bits_per_cell / max(per_cell, 1e-9))
    return scale_byte(min(MAX_AUTO_SCALE, wanted))


def choose_scale(method, latents: np.ndarray, *, target_bytes: int | None, quality: int | None, latent_space=None) -> tuple[int, int | None]:
    """(scale byte, target_bytes) for this image's full-size latents. Fixed-rate methods stay at full
    size. The budget is target_bytes, or the size the method estimates for `quality` at full size; a
    reduced scale then codes to that size (so quality keeps ordering sizes), and is returned as the
    target_bytes to use. latent_space: a LatentSpace (its bits_per_cell) or None (BITS_PER_CELL)."""
    if method.estimate_bytes is None:
        return SCALE_UNIT, target_bytes
    budget = (target_bytes - CONTAINER_OVERHEAD if target_bytes is not None
              else method.estimate_bytes(latents, quality=quality, **method.context(latent_space)))
    per_cell = latent_space.bits_per_cell if latent_space is not None else BITS_PER_CELL
    scale = scale_for_budget(8.0 * budget, latents.shape[1] * latents.shape[2], per_cell)
    if scale == SCALE_UNIT or target_bytes is not None:
        return scale, target_bytes
    return scale, budget + CONTAINER_OVERHEAD
