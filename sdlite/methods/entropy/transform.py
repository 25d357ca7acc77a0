"""The entropy method's transform: Haar bands of each latent channel, grouped for coding, and the
quantization step of every plane (pure numpy).

One level (DEFAULT_LEVELS; 0 to 2 allowed) of the orthonormal 2-D Haar decomposition, sides padded to
even by edge replication at each level. The VAE decoder is less sensitive to high-frequency latent
error (measured with VAElight: 2-4x), so detail bands get coarser steps: the base step times a gain per
level (DEFAULT_BAND_GAINS). Groups are coded coarsest first: with two levels, the level-2 group
(approximation of every channel, then its LH, HL, HH bands), then the level-1 details.
"""

from __future__ import annotations

import numpy as np

LEVELS = (0, 1, 2)  # Haar decomposition levels the stream may use
DEFAULT_LEVELS = 1  # two levels measured no better on VAElight + Kodak (BENCHMARKS.md)
STEP_SCALE = 1024  # base step: uint16 in 1/1024 coding units (1/1024 .. 64; sd1: raw-latent units; see channels.py)
GAIN_SCALE = 16  # detail-band step multipliers: uint8 in 1/16 units
DEFAULT_BAND_GAINS = (1.75, 1.3)  # finest details, next level: measured on VAElight + Kodak (BENCHMARKS.md)
FLAT_BAND_GAINS = (1.0, 1.0)  # near-lossless: one step for every band (at equal bytes: better with TAESD/TAESD3, equal with TAEF2/VAElight)
NEAR_LOSSLESS_QUALITY = 85  # with flat gains: within 0.1 dB of the round trip with TAESD, VAElight, TAESD3, TAEF2 (q80 lost 0.11 dB on TAESD3)


def haar_forward(latents: np.ndarray) -> np.ndarray:
    """(C, h, w) -> (4C, ceil(h/2), ceil(w/2)) band-major planes (LL..., LH..., HL..., HH...)."""
    padded = np.pad(latents.astype(np.float64), ((0, 0), (0, latents.shape[1] % 2), (0, latents.shape[2] % 2)), mode="edge")
    a, b = padded[:, 0::2, 0::2], padded[:, 0::2, 1::2]
    c, d = padded[:, 1::2, 0::2], padded[:, 1::2, 1::2]
    return np.concatenate([(a + b + c + d) / 2, (a - b + c - d) / 2, (a + b - c - d) / 2, (a - b - c + d) / 2])


def haar_inverse(planes: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    channels, height, width = shape
    ll, lh, hl, hh = np.split(planes, 4)
    out = np.empty((channels, 2 * ll.shape[1], 2 * ll.shape[2]), dtype=np.float64)
    out[:, 0::2, 0::2] = (ll + lh + hl + hh) / 2
    out[:, 0::2, 1::2] = (ll - lh + hl - hh) / 2
    out[:, 1::2, 0::2] = (ll + lh - hl - hh) / 2
    out[:, 1::2, 1::2] = (ll - lh - hl + hh) / 2
    return out[:, :height, :width]


def group_shapes(shape: tuple[int, int, int], levels: int) -> list[tuple[int, int, int]]:
    """Shapes of the coded groups, coarsest first: one group per level plus the top approximation."""
    channels, height, width = shape
    if levels == 0:
        return [shape]
    half = (channels, (height + 1) // 2, (width + 1) // 2)
    if levels == 1:
        return [(4 * channels, half[1], half[2])]
    return group_shapes(half, levels - 1) + [(3 * channels, half[1], half[2])]


def decompose(latents: np.ndarray, levels: int) -> list[np.ndarray]:
    """Groups of planes, coarsest first: [approximation + coarsest details, ..., finest details]."""
    if levels == 0:
        return [latents]
    bands = haar_forward(latents)
    if levels == 1:
        return [bands]
    channels = latents.shape[0]
    return decompose(bands[:channels], levels - 1) + [bands[channels:]]


def recompose(groups: list[np.ndarray], shape: tuple[int, int, int], levels: int) -> np.ndarray:
    if levels == 0:
        return groups[0]
    if levels == 1:
        return haar_inverse(groups[0], shape)
    channels, height, width = shape
    approximation = recompose(groups[:-1], (channels, (height + 1) // 2, (width + 1) // 2), levels - 1)
    return haar_inverse(np.concatenate([approximation, groups[-1]]), shape)


def group_steps(step_q: int, gains_q: tuple[int, int], levels: int, channels: int) -> list[np.ndarray]:
    """Per group, the step of each plane: the base step, times the gain of the plane's detail level
    (gains_q[0] for the finest details, gains_q[1] for the next level)."""
    step = step_q / STEP_SCALE
    fine, coarse = (g / GAIN_SCALE for g in gains_q)
    if levels == 0:
        return [np.full(channels, step)]
    if levels == 1:
        return [np.repeat([step, step * fine], [channels, 3 * channels])]
    return [np.repeat([step, step * coarse], [channels, 3 * channels]), np.full(3 * channels, step * fine)]
