"""The entropy method's context model, shared by encoder and decoder (pure integer numpy).

A symbol's prediction is an integer linear combination (WEIGHT_SCALE units, least squares per plane and
image) of its plane's N, NW, NE, NN, W and WW symbols and of the same position in up to MAX_CROSS
earlier planes of its group. It is kept to 1/FRACTIONS of a symbol: the residual r = s - floor(prediction)
is coded with the fraction as context, and with an activity bin (local gradients and the residual sizes
at N, W and in the previous plane).

Coding order. Within a plane, symbols go by wavefronts t = x + 2y, so that every spatial neighbour lies
on an earlier front. From format version 4 a plane is cut into blocks of at most BLOCK_SIDE cells a
side whose contexts stay inside the block (a neighbour across a block edge counts as off the plane), so
all blocks advance together and a plane has at most 3 * BLOCK_SIDE fronts whatever its shape; and the
planes of a group advance diagonally: coding step s holds front s - p of every plane p (schedule()),
so plane p's front f follows plane p-1's front f, which its cross-plane context needs. A group then
takes fronts + planes - 1 coder calls instead of fronts * planes (format versions 2 and 3: one plane,
one block, front by front, plane by plane).
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
BLOCK_SIDE = 64  # format version 4: contexts stay inside blocks of at most this many cells a side
CROSS_COLUMNS = SPATIAL_FEATURES + MAX_CROSS  # padded weight rows: spatial, then planes p-3, p-2, p-1


def n_weights(plane: int) -> int:
    return SPATIAL_FEATURES + min(plane, MAX_CROSS)


def _block_of(length: int, block: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Per index along a side: (offset inside its block, its block's length). Blocks of near-equal
    length, at most `block` (None: one block)."""
    parts = 1 if block is None else max(1, -(-length // block))
    sizes = np.full(parts, length // parts) + (np.arange(parts) < length % parts)
    starts = np.repeat(np.cumsum(sizes) - sizes, sizes)
    return np.arange(length) - starts, np.repeat(sizes, sizes)


class Layout:
    """Neighbour indices and coding order of one plane shape.

    Planes are held flat with one extra cell at index `zero` that always holds 0. Coding goes by
    wavefronts t = x + 2y inside each block (block=None: the whole plane is one block), each one
    vectorised: every neighbour a context uses (W, WW, NW, N, NE, NN) lies on an earlier wavefront of
    the same block. Off the block's edge, a sideways neighbour falls back to N, NN to N, and anything
    above the block's first row to 0."""

    def __init__(self, height: int, width: int, block: int | None = None):
        self.height, self.width, self.zero = height, width, height * width
        ys, xs = np.divmod(np.arange(height * width), width)
        here = ys * width + xs
        by, block_h = _block_of(height, block)
        bx, block_w = _block_of(width, block)
        ly, lx, bw = by[ys], bx[xs], block_w[xs]

        def at(dy, dx, valid, fallback):
            return np.where(valid, here + dy * width + dx, fallback)

        north = at(-1, 0, ly >= 1, self.zero)
        west = at(0, -1, lx >= 1, north)
        self.spatial = np.stack([  # (SPATIAL_FEATURES, positions)
            north,
            at(-1, -1, (ly >= 1) & (lx >= 1), north),
            at(-1, 1, (ly >= 1) & (lx + 1 < bw), north),
            at(-2, 0, ly >= 2, north),
            west,
            at(0, -2, lx >= 2, west),
        ])
        self.residual_neighbours = np.stack([north, at(0, -1, lx >= 1, self.zero)])  # N, W; 0 off the edge
        self.front_of = lx + 2 * ly  # the wavefront of each position
        self.order = np.argsort(self.front_of, kind="stable")  # by front, then by flat index
        count = int(self.front_of.max()) + 1 if self.zero else 0
        self.fronts = np.split(self.order, np.searchsorted(self.front_of[self.order], np.arange(1, count)))

    def empty(self, planes: int) -> np.ndarray:
        return np.zeros((planes, self.zero + 1), dtype=np.int64)


@functools.lru_cache(maxsize=16)
def layout(height: int, width: int, block: int | None = None) -> Layout:
    return Layout(height, width, block)


def schedule(layout: Layout, planes: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The coding order of a group (format version 4): (plane index, flat position) of every coded
    symbol, sorted by step s = front + plane, then plane, then position; and the index where each step
    starts (plus the end). planes: the group's coded (non-empty) planes, ascending."""
    planes = np.asarray(planes, dtype=np.int64)
    count = len(planes)
    # Each plane's positions already in (front, position) order, plane after plane; a stable sort by
    # (step, plane) keeps that order within a step (a radix sort when the keys fit 16 bits: blocks bound the fronts).
    keys = ((layout.front_of[layout.order][None, :] + planes[:, None]) * count + np.arange(count)[:, None]).ravel()
    ranked = np.argsort(keys.astype(np.uint16) if keys.max(initial=0) < 1 << 16 else keys, kind="stable")
    bounds = np.flatnonzero(np.diff(keys[ranked] // count)) + 1
    return planes[ranked // layout.zero], layout.order[ranked % layout.zero], np.concatenate([[0], bounds, [len(ranked)]]).astype(np.int64)


def feature_columns(plane: int) -> list[int]:
    """The columns of padded_weights' order (and plane_features') that hold plane p's n_weights(p) features:
    the spatial ones, then its min(p, MAX_CROSS) earlier planes."""
    return list(range(SPATIAL_FEATURES)) + list(range(CROSS_COLUMNS - min(plane, MAX_CROSS), CROSS_COLUMNS))


def padded_weights(weights: list, planes: int) -> np.ndarray:
    """(planes, CROSS_COLUMNS) int64: each plane's weights with its cross-plane ones right-aligned (column
    SPATIAL_FEATURES + MAX_CROSS - k holds plane p-k); planes without weights (None) get zeros."""
    out = np.zeros((planes, CROSS_COLUMNS), dtype=np.int64)
    for p, w in enumerate(weights):
        if w is None:
            continue
        out[p, feature_columns(p)] = w  # n_weights(p) of them, as the stream and the Plan hold them
    return out


ROWS_AT_ONCE = 1 << 18  # RowIndex: rows whose flat indices are held at once (13 int64 each: about 27 MB)


class RowIndex:
    """Flat indices into a group's (planes, layout.zero + 1) arrays for (plane, position) rows of a
    schedule, made once for many coder steps: the rows' features (CROSS_COLUMNS of them, in the column
    order of padded_weights: N, NW, NE, NN, W, WW, then planes p-3, p-2, p-1), their N and W residuals,
    the previous plane's residual and the row's own cell, each read or written by one gather on a .ravel()
    view. A cross-plane neighbour of a plane too low to have one, and the previous plane's residual of
    plane 0, read the plane's own zero cell (always 0)."""

    def __init__(self, layout: Layout, plane_ids: np.ndarray, positions: np.ndarray):
        stride = layout.zero + 1
        base = plane_ids * stride
        none = base + layout.zero
        cross = [np.where(plane_ids >= k, base - k * stride + positions, none) for k in range(MAX_CROSS, 0, -1)]
        self.features = np.concatenate([base + layout.spatial[:, positions], np.stack(cross)])  # (CROSS_COLUMNS, rows)
        self.residual_neighbours = base + layout.residual_neighbours[:, positions]  # (2, rows)
        self.previous = np.where(plane_ids >= 1, base - stride + positions, none)
        self.own = base + positions


def index_rows(layout: Layout, plane_ids: np.ndarray, positions: np.ndarray, bounds: np.ndarray):
    """For a schedule's steps (bounds as schedule() gives them): yield (first row, RowIndex, steps) for
    runs of whole steps of at most ROWS_AT_ONCE rows (or one step, when a step alone is longer), so the
    indices' memory stays bounded whatever the latents' size."""
    step = 0
    while step < len(bounds) - 1:
        last = max(step + 1, int(np.searchsorted(bounds, bounds[step] + ROWS_AT_ONCE, side="right")) - 1)
        first, stop = bounds[step], bounds[last]
        yield int(first), RowIndex(layout, plane_ids[first:stop], positions[first:stop]), range(step, last)
        step = last


def flat_activity_bins(feats: np.ndarray, residuals_flat: np.ndarray, index: RowIndex, rows: slice) -> np.ndarray:
    """activity_bins() for RowIndex rows (feats: their features as RowIndex.features reads them; the
    previous plane's residual is 0 for plane 0); residuals_flat is the group's residuals .ravel()."""
    act = _gradients(feats)
    act += 2 * np.abs(residuals_flat[index.residual_neighbours[:, rows]]).sum(axis=0)
    act += 2 * np.abs(residuals_flat[index.previous[rows]])
    return np.searchsorted(ACTIVITY_THRESHOLDS, act, side="right")


def row_predict(feats: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """predict() for rows with their own weights: feats (CROSS_COLUMNS, n) as RowIndex reads them, weights
    (n, CROSS_COLUMNS)."""
    return split_prediction(np.einsum("jn,nj->n", feats, weights))


def planes_predict(feats: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """predict() for whole planes at once: feats (CROSS_COLUMNS, planes, n) as plane_features gives them,
    weights (planes, CROSS_COLUMNS) as padded_weights gives them."""
    return split_prediction(np.einsum("jpn,pj->pn", feats, weights))


def split_prediction(acc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A prediction in WEIGHT_SCALE units -> (the integer below it, the fraction 0..FRACTIONS-1), clipped."""
    centre = np.clip((acc * FRACTIONS + WEIGHT_SCALE // 2) // WEIGHT_SCALE, -SYMBOL_LIMIT * FRACTIONS, SYMBOL_LIMIT * FRACTIONS)
    return centre // FRACTIONS, centre % FRACTIONS


def plane_features(symbols: np.ndarray, planes: np.ndarray, layout: Layout) -> np.ndarray:
    """The features of every position of whole planes (the encoder knows all symbols), as RowIndex rows
    would read them: (CROSS_COLUMNS, len(planes), layout.zero), one gather along the positions."""
    spatial = np.take(symbols[planes], layout.spatial, axis=1).transpose(1, 0, 2)  # (SPATIAL_FEATURES, planes, positions)
    cross = [np.where((planes >= k)[:, None], symbols[np.maximum(planes - k, 0), : layout.zero], 0) for k in range(MAX_CROSS, 0, -1)]
    return np.concatenate([spatial, np.stack(cross)]) if len(planes) else np.zeros((CROSS_COLUMNS, 0, layout.zero), np.int64)


def plane_activity_bins(feats: np.ndarray, residuals: np.ndarray, planes: np.ndarray, layout: Layout) -> np.ndarray:
    """activity_bins() of every position of whole planes: feats as plane_features gives them ->
    (len(planes), layout.zero)."""
    act = _gradients(feats)
    act += 2 * np.abs(np.take(residuals[planes], layout.residual_neighbours, axis=1)).sum(axis=1)
    act += 2 * np.where((planes >= 1)[:, None], np.abs(residuals[np.maximum(planes - 1, 0), : layout.zero]), 0)
    return np.searchsorted(ACTIVITY_THRESHOLDS, act, side="right")


def _gradients(feats: np.ndarray) -> np.ndarray:
    """The local-gradient part of a context's activity, from its N, NW, NE, NN and W features."""
    north, northwest, northeast, north2, west = feats[:5]
    return np.abs(north - northwest) + np.abs(northeast - north) + np.abs(north - north2) + np.abs(west - northwest)


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
    return split_prediction(weights.astype(np.int64) @ feats)


def activity_bins(feats: np.ndarray, residuals: np.ndarray, p: int, layout: Layout, positions) -> np.ndarray:
    """Context bin from local gradients and the residual sizes already decoded nearby (N, W, and here in
    the previous plane). residuals: (planes, layout.zero + 1)."""
    act = _gradients(feats)
    act += 2 * np.abs(residuals[p][layout.residual_neighbours[:, positions]]).sum(axis=0)
    if p >= 1:
        act += 2 * np.abs(residuals[p - 1][positions])
    return np.searchsorted(ACTIVITY_THRESHOLDS, act, side="right")


def fit_planes_weights(feats: np.ndarray, targets: np.ndarray, planes: np.ndarray) -> list[np.ndarray]:
    """fit_weights() of whole planes at once: feats (CROSS_COLUMNS, len(planes), n) as plane_features gives
    them, targets (len(planes), n). The normal equations' sums are sums of products of symbols (|s| <=
    SYMBOL_LIMIT), exact in float64 whatever their order while n * SYMBOL_LIMIT^2 < 2^53 (planes of up to 8
    million positions): then one batched product makes the very matrices fit_weights' per-plane sums make,
    and the planes with as many weights are solved in one call, each by the same LAPACK routine."""
    if not len(planes):
        return []
    n = feats.shape[-1]
    if n * SYMBOL_LIMIT * SYMBOL_LIMIT >= 2 ** 53:
        return [fit_weights(feats[feature_columns(p), i], targets[i]) for i, p in enumerate(planes)]
    by_plane = feats.transpose(1, 0, 2).astype(np.float64)  # (planes, CROSS_COLUMNS, n)
    grams = by_plane @ by_plane.transpose(0, 2, 1)
    rhs = (by_plane @ targets.astype(np.float64)[:, :, None])[:, :, 0]
    out: list = [None] * len(planes)
    sizes = np.array([n_weights(int(p)) for p in planes])
    for size in np.unique(sizes):
        chosen = np.flatnonzero(sizes == size)
        columns = feature_columns(int(planes[chosen[0]]))  # the same for every plane with `size` weights
        for i, w in zip(chosen, _solve_weights(grams[np.ix_(chosen, columns, columns)], rhs[np.ix_(chosen, columns)])):
            out[i] = w
    return out


def fit_weights(feats: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Encoder only: the least-squares predictor, quantized to int8 (fixed-order sums: no threaded BLAS)."""
    feats = feats.astype(np.float64)
    target = target.astype(np.float64)
    gram = np.einsum("in,jn->ij", feats, feats, optimize=False)
    rhs = np.einsum("in,n->i", feats, target, optimize=False)
    return _solve_weights(gram[None], rhs[None])[0]


def _solve_weights(grams: np.ndarray, rhs: np.ndarray) -> np.ndarray:
    """(k, w, w) normal matrices and (k, w) right sides -> (k, w) int8 least-squares weights in WEIGHT_SCALE
    units (slightly regularised; a singular system, which the regularisation all but rules out, gets zeros)."""
    regularised = grams + 1e-3 * np.eye(grams.shape[-1])
    try:
        solutions = np.linalg.solve(regularised, rhs[:, :, None])[:, :, 0]
    except np.linalg.LinAlgError:  # one by one: only the singular ones get zeros
        solutions = np.zeros(rhs.shape)
        for i, (gram, right) in enumerate(zip(regularised, rhs)):
            try:
                solutions[i] = np.linalg.solve(gram, right)
            except np.linalg.LinAlgError:
                pass
    return np.clip(np.rint(solutions * WEIGHT_SCALE), -128, 127).astype(np.int8)
