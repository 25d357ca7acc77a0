"""The entropy method's residual model: integer frequency tables of two-sided geometric distributions
centred on the fractional prediction, one decay byte per plane and activity bin (pure numpy).

A plane's decay bytes are clip(base + slope * bin): two bytes per plane. The tables come from exact
integer arithmetic and one correctly rounded division, so every machine builds the same floats, which
constriction quantizes deterministically.
"""

from __future__ import annotations

import numpy as np

import functools

from .context import FRACTIONS, N_BINS

TABLE_ONE = 1 << 20  # frequency at distance 0 from the prediction before normalisation
THETA_BITS = 24  # decay numerators are in 1/2**24 units
MAX_ALPHABET = 4096  # residual alphabet per plane (per group from format version 4); the step is raised rather than exceed it
MAX_TOTAL_ALPHABET = 1 << 16  # format versions 2 and 3: summed over a stream's planes, bounds the decoder's tables (about 50 MB)
MAX_RESIDUAL = 4095  # format version 4: |residual| bound, so a table never reaches beyond FRACTIONS * 4096 from its centre


def theta_numerator(q) -> np.ndarray:
    """Geometric decay per 1/FRACTIONS of a symbol, theta = num / 2**24, from a byte q:
    1 - theta = ((256 - q) / 256) ** 3 (cubic: fine resolution for wide distributions)."""
    q = np.asarray(q, dtype=np.int64)
    return (1 << THETA_BITS) - (256 - q) ** 3


def magnitude_columns(q, distances) -> np.ndarray:
    """Integer frequencies TABLE_ONE * theta**k of each decay byte in q at the sorted distances k,
    (len(q), len(distances)) int64 (before the floor at 1). The sequence is exact integer arithmetic: a
    multiply-shift per step, k steps; it stops early once every row has reached 0. Cost: one vector
    operation per step up to the largest distance asked for."""
    num = np.atleast_1d(theta_numerator(q))
    distances = np.asarray(distances, dtype=np.int64)
    out = np.zeros((len(num), len(distances)), dtype=np.int64)
    current = np.full(len(num), TABLE_ONE, dtype=np.int64)
    product = np.empty_like(current)
    at = 0
    while at < len(distances) and distances[at] == 0:
        out[:, at] = current
        at += 1
    k = 0
    while at < len(distances):
        k += 1
        np.multiply(current, num, out=product)  # in place: the loop runs up to FRACTIONS * 32769 times
        np.right_shift(product, THETA_BITS, out=current)
        if k % 1024 == 0 and not current.any():
            break  # every later magnitude is 0 too
        while at < len(distances) and distances[at] == k:
            out[:, at] = current
            at += 1
    return out


def _distances(rmin: int, rmax: int) -> np.ndarray:
    """(FRACTIONS, alphabet) distances |FRACTIONS * r - f| from the prediction, in 1/FRACTIONS of a symbol."""
    return np.abs(FRACTIONS * np.arange(rmin, rmax + 1, dtype=np.int64)[None, :] - np.arange(FRACTIONS)[:, None])


def residual_tables(q, rmin: int, rmax: int) -> np.ndarray:
    """Normalised float64 probabilities, shape (len(q), FRACTIONS, rmax - rmin + 1).

    Row [i, f] models a residual r in rmin..rmax whose prediction lay f/FRACTIONS of a symbol above
    the integer it is counted from: P(r) ~ theta**|FRACTIONS * r - f| (a two-sided geometric
    distribution centred on the exact prediction). The frequencies are exact integers (TABLE_ONE *
    theta**k by repeated integer multiply-shift, floored at 1); dividing by their exact sum is
    correctly rounded IEEE arithmetic. Only the distances the range needs are kept."""
    distance = _distances(rmin, rmax)
    needed, index = np.unique(distance, return_inverse=True)
    freq = np.maximum(magnitude_columns(q, needed), 1)[:, index.reshape(distance.shape)]
    return freq / freq.sum(axis=2, keepdims=True)


def tables_for_planes(decays: list, ranges: list) -> list[np.ndarray]:
    """Format versions 2 and 3: each plane's tables, residual_tables(decays[i], *ranges[i]), with the
    integer magnitudes computed once for the whole stream (one pass up to the largest distance any plane
    needs, whatever the number of planes)."""
    distances = [_distances(rmin, rmax) for rmin, rmax in ranges]
    needed = np.unique(np.concatenate([d.ravel() for d in distances])) if distances else np.zeros(0, np.int64)
    qs = np.unique(np.concatenate([np.atleast_1d(q) for q in decays])) if decays else np.zeros(0, np.int64)
    columns = np.maximum(magnitude_columns(qs, needed), 1)
    tables = []
    for q, distance in zip(decays, distances):
        rows = np.searchsorted(qs, np.atleast_1d(q))
        freq = columns[rows][:, np.searchsorted(needed, distance)]
        tables.append(freq / freq.sum(axis=2, keepdims=True))
    return tables


@functools.lru_cache(maxsize=2)
def _all_decay_log_tables(rmin: int, rmax: int) -> np.ndarray:
    """Encoder only: log2 of residual_tables for every decay byte, (256, FRACTIONS * alphabet)."""
    return np.log2(residual_tables(np.arange(256), rmin, rmax)).reshape(256, -1)


def decay_bytes(base: int, slope: int) -> np.ndarray:
    return np.clip(base + slope * np.arange(N_BINS), 0, 255)


MAX_SLOPE = 31  # decay_bytes' slope byte: 0..MAX_SLOPE (five bits)
_CELLS_AT_ONCE = 1 << 21  # choose_decays' working set: planes * bins * FRACTIONS * alphabet histogram cells (16 MB)


def _totals(costs: np.ndarray) -> np.ndarray:
    """costs (planes, bins, 256): the code length of each bin's residuals under each decay byte ->
    (MAX_SLOPE + 1 slopes, 256 bases, planes): sum over bins b of costs[p, b, decay_bytes(base, slope)[b]].

    Bases and slopes are never negative, so only the upper clip applies: for a slope s, bin b reads the
    256 bytes from s * b on, with the last byte repeated past 255. Shifted slices of that padded row,
    added bin after bin (the order of a sum over a gathered copy, so the totals are the same floats);
    planes last, so each slice is one contiguous block."""
    planes, bins, _ = costs.shape
    by_bin = costs.transpose(1, 2, 0)  # (bins, 256, planes)
    padded = np.empty((bins, 256 + MAX_SLOPE * (bins - 1), planes))
    padded[:, :256] = by_bin
    padded[:, 256:] = by_bin[:, 255:]
    out = np.empty((MAX_SLOPE + 1, 256, planes))
    for slope, column in enumerate(out):
        column[...] = padded[0, :256]
        for b in range(1, bins):
            column += padded[b, slope * b : slope * b + 256]
    return out


def choose_decays(residuals: np.ndarray, fractions: np.ndarray, bins: np.ndarray, rmin: int, rmax: int) -> list[tuple[int, int, float]]:
    """Encoder only: for each plane (rows of the (planes, n) arrays, sharing the residual range), the
    (base, slope) whose per-bin decay bytes minimise the ideal code length of its residuals; returns
    [(base, slope, bits)]. Every base 0..255 and slope 0..MAX_SLOPE is tried."""
    alphabet = rmax - rmin + 1
    log_probs = _all_decay_log_tables(int(rmin), int(rmax))  # (256, fractions * alphabet)
    cells_per_plane = N_BINS * FRACTIONS * alphabet
    at_once = max(1, _CELLS_AT_ONCE // cells_per_plane)
    chosen = []
    for start in range(0, len(residuals), at_once):
        stop = min(start + at_once, len(residuals))
        offsets = (np.arange(stop - start) * cells_per_plane)[:, None]
        cells = offsets + (bins[start:stop] * FRACTIONS + fractions[start:stop]) * alphabet + residuals[start:stop] - rmin
        hist = np.bincount(cells.ravel(), minlength=(stop - start) * cells_per_plane).reshape(-1, FRACTIONS * alphabet)
        costs = -(hist.astype(np.float64) @ log_probs.T).reshape(stop - start, N_BINS, 256)
        totals = _totals(costs)
        least = totals.min(axis=(0, 1))
        # the first minimum in (base, slope) order, as per plane: found on a boolean copy in that order, not the floats
        best = (totals == least).transpose(2, 1, 0).reshape(stop - start, -1).argmax(axis=1)
        for index, bits in zip(best.tolist(), least.tolist()):
            chosen.append((index // (MAX_SLOPE + 1), index % (MAX_SLOPE + 1), bits))
    return chosen
