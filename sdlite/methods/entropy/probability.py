"""The entropy method's residual model: integer frequency tables of two-sided geometric distributions
centred on the fractional prediction, one decay byte per plane and activity bin (pure numpy).

A plane's decay bytes are clip(base + slope * bin): two bytes per plane. The tables come from exact
integer arithmetic and one correctly rounded division, so every machine builds the same floats, which
constriction quantizes deterministically.
"""

from __future__ import annotations

import numpy as np

from .context import FRACTIONS, N_BINS

TABLE_ONE = 1 << 20  # frequency at distance 0 from the prediction before normalisation
THETA_BITS = 24  # decay numerators are in 1/2**24 units
MAX_ALPHABET = 4096  # residual alphabet per plane; the step is raised rather than exceed it
MAX_TOTAL_ALPHABET = 1 << 16  # summed over a stream's planes: bounds the decoder's tables (about 50 MB)


def theta_numerator(q) -> np.ndarray:
    """Geometric decay per 1/FRACTIONS of a symbol, theta = num / 2**24, from a byte q:
    1 - theta = ((256 - q) / 256) ** 3 (cubic: fine resolution for wide distributions)."""
    q = np.asarray(q, dtype=np.int64)
    return (1 << THETA_BITS) - (256 - q) ** 3


def residual_tables(q, rmin: int, rmax: int) -> np.ndarray:
    """Normalised float64 probabilities, shape (len(q), FRACTIONS, rmax - rmin + 1).

    Row [i, f] models a residual r in rmin..rmax whose prediction lay f/FRACTIONS of a symbol above
    the integer it is counted from: P(r) ~ theta**|FRACTIONS * r - f| (a two-sided geometric
    distribution centred on the exact prediction). The frequencies are exact integers (TABLE_ONE *
    theta**k by repeated integer multiply-shift, floored at 1); dividing by their exact sum is
    correctly rounded IEEE arithmetic."""
    num = np.atleast_1d(theta_numerator(q))
    longest = FRACTIONS * (max(-rmin, rmax, 0) + 1)
    magnitudes = np.empty((len(num), longest + 1), dtype=np.int64)
    magnitudes[:, 0] = TABLE_ONE
    for k in range(1, longest + 1):
        magnitudes[:, k] = (magnitudes[:, k - 1] * num) >> THETA_BITS
    distance = np.abs(FRACTIONS * np.arange(rmin, rmax + 1)[None, :] - np.arange(FRACTIONS)[:, None])
    freq = np.maximum(magnitudes, 1)[:, distance]
    return freq / freq.sum(axis=2, keepdims=True)


def decay_bytes(base: int, slope: int) -> np.ndarray:
    return np.clip(base + slope * np.arange(N_BINS), 0, 255)


_BASES, _SLOPES = np.meshgrid(np.arange(256), np.arange(32), indexing="ij")
_CHOSEN = np.clip(_BASES[..., None] + _SLOPES[..., None] * np.arange(N_BINS), 0, 255)  # (256, 32, bins)


def choose_decay(residuals: np.ndarray, fractions: np.ndarray, bins: np.ndarray, rmin: int, rmax: int) -> tuple[int, int, float]:
    """Encoder only: the (base, slope) whose per-bin decay bytes minimise the ideal code length of one
    plane's residuals; returns (base, slope, bits)."""
    alphabet = rmax - rmin + 1
    log_probs = np.log2(residual_tables(np.arange(256), rmin, rmax)).reshape(256, -1)  # (256, fractions * alphabet)
    cells = (bins * FRACTIONS + fractions) * alphabet + residuals - rmin
    hist = np.bincount(cells, minlength=N_BINS * FRACTIONS * alphabet).reshape(N_BINS, -1)
    costs = -(log_probs @ hist.T)  # (256 decay bytes, bins)
    total = costs[_CHOSEN, np.arange(N_BINS)].sum(axis=-1)  # (256, 32)
    base, slope = np.unravel_index(int(np.argmin(total)), total.shape)
    return int(base), int(slope), float(total[base, slope])
