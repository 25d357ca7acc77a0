"""The entropy method's context model, shared by encoder and decoder (pure integer numpy).

Within a group, each plane is coded by wavefronts t = x + 2y (each front one batched call into the
range coder), and within a front plane by plane, so that every neighbour a context needs is already
decoded. A symbol's prediction is an integer linear combination (WEIGHT_SCALE units, least squares per
plane and image) of its plane's N, NW, NE, NN, W and WW symbols and of the same position in up to
MAX_CROSS earlier planes of its group. It is kept to 1/FRACTIONS of a symbol: the residual
r = s - floor(prediction) is coded with the fraction as context, and with an activity bin (local
gradients and the residual sizes at N, W and in the previous plane).
"""

from __future__ import annotations

import functools

import numpy as np

WEIGHT_SCALE = 32  # predictor weights: int8 in 1/32 units (-4 .. +3.97)
MAX_CROSS = 3  # earlier planes of the group a prediction looks at (same position)
SPATIAL_FEATURES = 6  # N, NW, NE, NN, W, WW
FRACTIONS = 8  # predictions keep 1/8 of a symbol; the residual model is centred on them
ACTIVITY_THRESHOLDS = np.array([1, 2, 3, 4, 6, 8, 11, 15, 20, 28, 40], dtype=np.int64)
N_BINS = len(ACTIVITY_THRESHOLDS) + 1
SYMBOL_LIMIT = 32767  # symbols and predictions are clipped to +-this, which bounds decoding of crafted streams


def n_weights(plane: int) -> int:
    return SPATIAL_FEATURES + min(plane, MAX_CROSS)


class Layout:
    """Neighbour indices and coding order of one plane shape.

    Planes are held flat with one extra cell at index `zero` that always holds 0. Coding goes by
    wavefronts t = x + 2y, each one vectorised: every neighbour a context uses (W, WW, NW, N, NE, NN)
    lies on an earlier wavefront. Off the plane's edge, a sideways neighbour falls back to N, NN to N,
    and anything above the first row to 0."""

    def __init__(self, height: int, width: int):
        self.height, self.width, self.zero = height, width, height * width
        ys, xs = np.divmod(np.arange(height * width), width)
        here = ys * width + xs

        def at(dy, dx, valid, fallback):
            return np.where(valid, here + dy * width + dx, fallback)

        north = at(-1, 0, ys >= 1, self.zero)
        west = at(0, -1, xs >= 1, north)
        self.spatial = np.stack([  # (SPATIAL_FEATURES, positions)
            north,
            at(-1, -1, (ys >= 1) & (xs >= 1), north),
            at(-1, 1, (ys >= 1) & (xs + 1 < width), north),
            at(-2, 0, ys >= 2, north),
            west,
            at(0, -2, xs >= 2, west),
        ])
        self.residual_neighbours = np.stack([north, at(0, -1, xs >= 1, self.zero)])  # N, W; 0 off the edge
        self.fronts = []
        for t in range(width + 2 * (height - 1)):
            front_ys = np.arange(max(0, -(-(t - width + 1) // 2)), min(height - 1, t // 2) + 1)
            self.fronts.append(front_ys * width + t - 2 * front_ys)

    def empty(self, planes: int) -> np.ndarray:
        return np.zeros((planes, self.zero + 1), dtype=np.int64)


@functools.lru_cache(maxsize=16)
def layout(height: int, width: int) -> Layout:
    return Layout(height, width)


def features(symbols: np.ndarray, p: int, layout: Layout, positions) -> np.ndarray:
    """(n_weights(p), n) int64 features of plane p at flat positions, from decoded symbols only:
    N, NW, NE, NN, W, WW in its own plane, then the same position in up to MAX_CROSS earlier planes.
    symbols: (planes, layout.zero + 1)."""
    rows = [symbols[p][layout.spatial[:, positions]]]
    if p:
        rows.append(symbols[max(0, p - MAX_CROSS):p, positions])
    return np.concatenate(rows)


def predict(feats: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Prediction in 1/FRACTIONS of a symbol, split into (the integer below it, the fraction 0..FRACTIONS-1)."""
    acc = weights.astype(np.int64) @ feats
    centre = np.clip((acc * FRACTIONS + WEIGHT_SCALE // 2) // WEIGHT_SCALE, -SYMBOL_LIMIT * FRACTIONS, SYMBOL_LIMIT * FRACTIONS)
    return centre // FRACTIONS, centre % FRACTIONS


def activity_bins(feats: np.ndarray, residuals: np.ndarray, p: int, layout: Layout, positions) -> np.ndarray:
    """Context bin from local gradients and the residual sizes already decoded nearby (N, W, and here in
    the previous plane). residuals: (planes, layout.zero + 1)."""
    north, northwest, northeast, north2, west = feats[:5]
    act = np.abs(north - northwest) + np.abs(northeast - north) + np.abs(north - north2) + np.abs(west - northwest)
    act += 2 * np.abs(residuals[p][layout.residual_neighbours[:, positions]]).sum(axis=0)
    if p >= 1:
        act += 2 * np.abs(residuals[p - 1][positions])
    return np.searchsorted(ACTIVITY_THRESHOLDS, act, side="right")


def fit_weights(feats: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Encoder only: the least-squares predictor, quantized to int8 (fixed-order sums: no threaded BLAS)."""
    feats = feats.astype(np.float64)
    target = target.astype(np.float64)
    gram = np.einsum("in,jn->ij", feats, feats, optimize=False) + 1e-3 * np.eye(len(feats))
    rhs = np.einsum("in,n->i", feats, target, optimize=False)
    try:
        solution = np.linalg.solve(gram, rhs)
    except np.linalg.LinAlgError:
        solution = np.zeros(len(feats))
    return np.clip(np.rint(solution * WEIGHT_SCALE), -128, 127).astype(np.int8)
