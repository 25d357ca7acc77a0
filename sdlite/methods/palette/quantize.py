"""Uniform 8-bit quantization of raw SD latents, as in the seed method (pure numpy).

A raw latent value z (before SD's 0.18215 scaling) maps to q = round(z / STEP + OFFSET), clipped to
0..255. With STEP = 0.18215 the representable range is OFFSET * STEP = about +-23.2 raw units; values
outside it are clipped, and the number of clipped values is reported so users can see it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SEED_STEP = 0.18215
"""Quantization step in raw latent units (SD 1.x's scaling factor, as the seed used)."""
SEED_OFFSET = 127.5
"""Code of the raw value 0; codes range 0..255."""
Q_MIN, Q_MAX = 0, 255


@dataclass(frozen=True)
class QuantizedLatents:
    codes: np.ndarray  # uint8, same shape as the input latents
    clipped: int  # how many values fell outside the representable range


def quantize(latents: np.ndarray, step: float = SEED_STEP, offset: float = SEED_OFFSET) -> QuantizedLatents:
    """Raw float latents -> uint8 codes in 0..255, with the count of clipped values."""
    scaled = np.rint(np.asarray(latents, dtype=np.float64) / step + offset)
    clipped = int(np.count_nonzero((scaled < Q_MIN) | (scaled > Q_MAX)))
    return QuantizedLatents(np.clip(scaled, Q_MIN, Q_MAX).astype(np.uint8), clipped)


def dequantize(codes: np.ndarray, step: float = SEED_STEP, offset: float = SEED_OFFSET) -> np.ndarray:
    """uint8 codes -> raw float32 latents (the centre of each code's interval)."""
    return ((np.asarray(codes, dtype=np.float32) - np.float32(offset)) * np.float32(step)).astype(np.float32)
