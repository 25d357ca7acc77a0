"""Method "entropy": Haar bands, per-band uniform quantization, a context model, range coding.

Encoding a raw latent z of shape (C, h, w):

1. Transform: a one-level (DEFAULT_LEVELS; 0 to 2 allowed) orthonormal 2-D Haar decomposition of
   each channel (sides padded to even by edge replication at each level). The VAE decoder is less
   sensitive to high-frequency latent error (measured with VAElight: 2-4x), so detail bands get
   coarser steps: step * gain per level (DEFAULT_BAND_GAINS). Planes are coded in groups, coarsest
   first: with two levels, the level-2 group (approximation of every channel, then its LH, HL, HH
   bands), then the level-1 details.
2. Symbols s[p] = round((plane[p] - mean_p) / step_p); means, step and gains are integers in the
   stream (MEAN_SCALE, STEP_SCALE, GAIN_SCALE units). The step follows the rate target.
3. Within a group, each plane is coded by wavefronts t = x + 2y (each front one batched call into the
   range coder), and within a front plane by plane, so that every neighbour a context needs is
   already decoded. A symbol's prediction is an integer linear combination (WEIGHT_SCALE units, least
   squares per plane and image) of its plane's N, NW, NE, NN, W and WW symbols and of the same
   position in up to MAX_CROSS earlier planes of its group. It is kept to 1/FRACTIONS of a symbol:
   the residual r = s - floor(prediction) is coded with the fraction as context.
4. The residual's probability model is a two-sided geometric distribution centred on the exact
   (fractional) prediction. Its decay byte depends on the plane and on an activity bin (local
   gradients and the residual sizes at N, W and in the previous plane), as clip(base_p + slope_p * bin):
   two bytes per plane. Frequency tables come from integer arithmetic. The side information (plane
   headers, weights) is deflated.

Everything the decoder's model depends on is integer data from the stream and integer maths, so the
decoder's probabilities are bit-identical on every machine and thread count.
"""

from __future__ import annotations

import functools
import struct
import zlib

import numpy as np

from .bitstream import CONTAINER_OVERHEAD, inflate_bounded
from .errors import BitstreamError, OptionError

LEVELS = (0, 1, 2)  # Haar decomposition levels the stream may use
DEFAULT_LEVELS = 1  # two levels measured no better on VAElight + Kodak (BENCHMARKS.md)
MEAN_SCALE = 64  # plane means: int16 in 1/64 raw-latent units
STEP_SCALE = 1024  # base step: uint16 in 1/1024 raw-latent units (1/1024 .. 64)
GAIN_SCALE = 16  # high-band step multiplier: uint8 in 1/16 units
DEFAULT_BAND_GAINS = (1.75, 1.3)  # finest details, next level: measured on VAElight + Kodak (BENCHMARKS.md)
WEIGHT_SCALE = 32  # predictor weights: int8 in 1/32 units (-4 .. +3.97)
MAX_CROSS = 3  # earlier planes of the group a prediction looks at (same position)
SPATIAL_FEATURES = 6  # N, NW, NE, NN, W, WW
FRACTIONS = 8  # predictions keep 1/8 of a symbol; the residual model is centred on them
ACTIVITY_THRESHOLDS = np.array([1, 2, 3, 4, 6, 8, 11, 15, 20, 28, 40], dtype=np.int64)
N_BINS = len(ACTIVITY_THRESHOLDS) + 1
TABLE_ONE = 1 << 20  # frequency at distance 0 from the prediction before normalisation
THETA_BITS = 24  # decay numerators are in 1/2**24 units
MAX_ALPHABET = 4096  # residual alphabet per plane; the step is raised rather than exceed it
MAX_TOTAL_ALPHABET = 1 << 16  # summed over a stream's planes: bounds the decoder's tables (about 50 MB)
SYMBOL_LIMIT = 32767  # predictions are clipped to +-this, which bounds decoding of crafted streams

QUALITY_MIN, QUALITY_MAX = 1, 100
DEFAULT_QUALITY = 50
STEP_COARSEST, STEP_FINEST = 16.0, 0.25  # base step at quality 1 and 100, geometric in between (50 -> 2.04)
TARGET_TOLERANCE = 0.05  # target_bytes: the result lies in [95 %, 100 %] of the target
_SEARCH_STOP = 0.995  # the bisection stops once a fit reaches this fraction of the target
_SEARCH_ITERATIONS = 24
PARAMS_ZLIB_LEVEL = 9  # the side information (plane headers, predictor weights) is deflated

_GLOBAL = struct.Struct(">BBBH")  # levels, finest-detail gain, next-level gain, base step
_PLANE = struct.Struct(">hhhBB")  # mean, rmin, rmax, decay base, decay slope


# --- integer probability tables ------------------------------------------------------------------
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
    correctly rounded IEEE arithmetic, so every machine gets the same floats, which constriction
    quantizes deterministically."""
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


# --- transform -------------------------------------------------------------------------------------
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


# --- context model (shared by encoder and decoder) ------------------------------------------------
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


@functools.lru_cache(maxsize=16)
def _layout(height: int, width: int) -> Layout:
    return Layout(height, width)


# --- encoder ----------------------------------------------------------------------------------------
def _fit_weights(feats: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Least-squares predictor, quantized to int8 (fixed-order sums: no threaded BLAS)."""
    feats = feats.astype(np.float64)
    target = target.astype(np.float64)
    gram = np.einsum("in,jn->ij", feats, feats, optimize=False) + 1e-3 * np.eye(len(feats))
    rhs = np.einsum("in,n->i", feats, target, optimize=False)
    try:
        solution = np.linalg.solve(gram, rhs)
    except np.linalg.LinAlgError:
        solution = np.zeros(len(feats))
    return np.clip(np.rint(solution * WEIGHT_SCALE), -128, 127).astype(np.int8)


class _Plan:
    """Everything the encoder decides for one base step; estimated_bytes() predicts the stream size."""

    def __init__(self, latents: np.ndarray, step_q: int, gains_q: tuple[int, int], levels: int):
        self.shape = latents.shape
        self.levels, self.step_q, self.gains_q = levels, int(step_q), tuple(int(g) for g in gains_q)
        planes = decompose(latents.astype(np.float64), levels)
        steps = group_steps(self.step_q, self.gains_q, levels, latents.shape[0])
        self.means_q, self.symbols, self.residuals, self.fractions, self.bins, self.weights = [], [], [], [], [], []
        for group, group_step in zip(planes, steps):
            means_q = np.clip(np.rint(group.reshape(len(group), -1).mean(axis=1) * MEAN_SCALE), -32768, 32767).astype(np.int64)
            scaled = (group - (means_q / MEAN_SCALE)[:, None, None]) / group_step[:, None, None]
            symbols = np.clip(np.rint(scaled), -SYMBOL_LIMIT, SYMBOL_LIMIT).astype(np.int64)
            # the encoder knows every symbol, so it evaluates the (causal) contexts for whole planes at once
            layout = _layout(*symbols.shape[1:])
            positions = np.arange(layout.zero)
            flat = layout.empty(len(group))
            flat[:, :layout.zero] = symbols.reshape(len(group), -1)
            residuals, fractions, bins = layout.empty(len(group)), layout.empty(len(group)), layout.empty(len(group))
            all_feats = []
            for p in range(len(group)):
                feats = features(flat, p, layout, positions)
                weights = _fit_weights(feats, flat[p, :layout.zero])
                below, fractions[p, :layout.zero] = predict(feats, weights)
                residuals[p, :layout.zero] = flat[p, :layout.zero] - below
                self.weights.append(weights)
                all_feats.append(feats)
            for p, feats in enumerate(all_feats):
                bins[p, :layout.zero] = activity_bins(feats, residuals, p, layout, positions)
            self.means_q += list(means_q)
            self.symbols.append(symbols)
            self.residuals.append(residuals)
            self.fractions.append(fractions)
            self.bins.append(bins)
        self.rmin = np.concatenate([r[:, :-1].min(axis=1) for r in self.residuals])
        # constriction needs at least two symbols in an alphabet
        self.rmax = np.maximum(np.concatenate([r[:, :-1].max(axis=1) for r in self.residuals]), self.rmin + 1)
        self.decay = np.zeros((len(self.rmin), 2), dtype=np.int64)
        self.bits = 0.0
        if self.alphabet_ok:
            self._choose_decays()

    def _planes(self):
        """(index over all planes, group index, index within the group) in coding order."""
        index = 0
        for g, group in enumerate(self.symbols):
            for p in range(len(group)):
                yield index, g, p
                index += 1

    def _choose_decays(self) -> None:
        """Per plane, the (base, slope) whose per-bin decay bytes minimise the ideal code length."""
        candidates = np.arange(256)
        bases, slopes = np.meshgrid(np.arange(256), np.arange(32), indexing="ij")
        chosen = np.clip(bases[..., None] + slopes[..., None] * np.arange(N_BINS), 0, 255)  # (256, 32, bins)
        for i, g, p in self._planes():
            rmin, rmax = int(self.rmin[i]), int(self.rmax[i])
            alphabet = rmax - rmin + 1
            log_probs = np.log2(residual_tables(candidates, rmin, rmax)).reshape(256, -1)  # (256, fractions * alphabet)
            cells = (self.bins[g][p] * FRACTIONS + self.fractions[g][p]) * alphabet + self.residuals[g][p] - rmin
            hist = np.bincount(cells[:-1], minlength=N_BINS * FRACTIONS * alphabet).reshape(N_BINS, -1)
            costs = -(log_probs @ hist.T)  # (256 decay bytes, bins)
            total = costs[chosen, np.arange(N_BINS)].sum(axis=-1)  # (256, 32)
            base, slope = np.unravel_index(int(np.argmin(total)), total.shape)
            self.decay[i] = (base, slope)
            self.bits += float(total[base, slope])

    @property
    def alphabet_ok(self) -> bool:
        alphabets = self.rmax - self.rmin + 1
        return bool(np.all(alphabets <= MAX_ALPHABET) and alphabets.sum() <= MAX_TOTAL_ALPHABET)

    def params(self) -> bytes:
        return zlib.compress(self.raw_params(), PARAMS_ZLIB_LEVEL)

    def raw_params(self) -> bytes:
        out = bytearray(_GLOBAL.pack(self.levels, *self.gains_q, self.step_q))
        for i, _, _ in self._planes():
            out += _PLANE.pack(int(self.means_q[i]), int(self.rmin[i]), int(self.rmax[i]), int(self.decay[i, 0]), int(self.decay[i, 1]))
        for weights in self.weights:
            out += weights.tobytes()
        return bytes(out)

    def estimated_bytes(self) -> int:
        return CONTAINER_OVERHEAD + len(self.params()) + 4 * (int(self.bits) // 32 + 2)

    def payload(self) -> bytes:
        import constriction

        family = constriction.stream.model.Categorical(perfect=False)
        encoder = constriction.stream.queue.RangeEncoder()
        tables = [residual_tables(decay_bytes(*self.decay[i]), int(self.rmin[i]), int(self.rmax[i])) for i, _, _ in self._planes()]
        first = 0
        for symbols, residuals, fractions, bins in zip(self.symbols, self.residuals, self.fractions, self.bins):
            for front in _layout(*symbols.shape[1:]).fronts:
                for p in range(len(residuals)):
                    coded = (residuals[p, front] - self.rmin[first + p]).astype(np.int32)
                    encoder.encode(coded, family, tables[first + p][bins[p, front], fractions[p, front]])
            first += len(residuals)
        return encoder.get_compressed().astype("<u4").tobytes()


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


def quality_to_step(quality) -> float:
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not QUALITY_MIN <= quality <= QUALITY_MAX:
        raise OptionError(f"quality must be an integer from {QUALITY_MIN} to {QUALITY_MAX}, got {quality!r}")
    fraction = (quality - QUALITY_MIN) / (QUALITY_MAX - QUALITY_MIN)
    return STEP_COARSEST * (STEP_FINEST / STEP_COARSEST) ** fraction


def plan_for_step(latents: np.ndarray, step: float, *, band_gains: tuple[float, float] = DEFAULT_BAND_GAINS, levels: int = DEFAULT_LEVELS) -> _Plan:
    if levels not in LEVELS:
        raise OptionError(f"levels must be one of {LEVELS}, got {levels!r}")
    gains_q = tuple(int(np.clip(round(g * GAIN_SCALE), 1, 255)) for g in band_gains)
    step_q = int(np.clip(round(step * STEP_SCALE), 1, 65535))
    plan = _Plan(latents, step_q, gains_q, levels)
    while not plan.alphabet_ok and step_q < 65535:  # extreme latents or a tiny step: coarsen until it fits
        step_q = min(65535, step_q * 2)
        plan = _Plan(latents, step_q, gains_q, levels)
    if not plan.alphabet_ok:
        raise OptionError("latents are too large to code (residual alphabet exceeds its limit at the coarsest step)")
    return plan


def _search_target(latents: np.ndarray, target_bytes: int, **options) -> _Plan:
    """Finest step whose estimated size is <= target_bytes, by bisection on log(step)."""
    fine, coarse = np.log(1 / STEP_SCALE), np.log(64.0)
    best = plan_for_step(latents, float(np.exp(coarse)), **options)
    if best.estimated_bytes() > target_bytes:
        raise OptionError(
            f"target_bytes={target_bytes} is below the smallest stream for this image "
            f"(about {best.estimated_bytes()} bytes); ask for more"
        )
    for _ in range(_SEARCH_ITERATIONS):
        middle = (fine + coarse) / 2
        plan = plan_for_step(latents, float(np.exp(middle)), **options)
        if plan.estimated_bytes() <= target_bytes:
            best, coarse = plan, middle
        else:
            fine = middle
        if best.estimated_bytes() >= _SEARCH_STOP * target_bytes:
            break
    return best


def encode(latents: np.ndarray, *, quality: int | None = None, target_bytes: int | None = None,
           band_gains: tuple[float, float] = DEFAULT_BAND_GAINS, levels: int = DEFAULT_LEVELS):
    """Latents (C, h, w) -> Encoded. quality 1..100 (default DEFAULT_QUALITY) or target_bytes."""
    from .methods import Encoded

    if quality is not None and target_bytes is not None:
        raise OptionError("pass quality or target_bytes, not both")
    for gain in band_gains:
        if not 1 / GAIN_SCALE <= gain <= 255 / GAIN_SCALE:
            raise OptionError(f"band gains must be between {1 / GAIN_SCALE} and {255 / GAIN_SCALE}, got {gain}")
    options = {"band_gains": tuple(band_gains), "levels": levels}
    if target_bytes is not None:
        if isinstance(target_bytes, bool) or not isinstance(target_bytes, (int, np.integer)) or target_bytes <= 0:
            raise OptionError(f"target_bytes must be a positive integer, got {target_bytes!r}")
        plan = _search_target(latents, int(target_bytes), **options)
        payload = plan.payload()
        while CONTAINER_OVERHEAD + len(plan.params()) + len(payload) > target_bytes:  # the estimate fell short
            plan = plan_for_step(latents, plan.step_q / STEP_SCALE * 1.02, **options)
            payload = plan.payload()
    else:
        plan = plan_for_step(latents, quality_to_step(DEFAULT_QUALITY if quality is None else quality), **options)
        payload = plan.payload()
    return Encoded(plan.params(), payload, {"step": plan.step_q / STEP_SCALE, "levels": plan.levels, "clipped": 0})


# --- decoder ----------------------------------------------------------------------------------------
def _parse_params(params: bytes, shape: tuple[int, int, int]):
    if len(params) < _GLOBAL.size:
        raise BitstreamError("entropy method parameters are truncated")
    levels, fine_q, coarse_q, step_q = _GLOBAL.unpack_from(params)
    if levels not in LEVELS or fine_q == 0 or coarse_q == 0 or step_q == 0:
        raise BitstreamError(f"entropy method parameters are invalid (levels {levels}, gains {fine_q}/{coarse_q}, step {step_q})")
    shapes = group_shapes(shape, levels)
    sizes = [s[0] for s in shapes]
    expected = _GLOBAL.size + sum(sizes) * _PLANE.size + sum(n_weights(p) for size in sizes for p in range(size))
    if len(params) != expected:
        raise BitstreamError(f"entropy method parameters: expected {expected} bytes, got {len(params)}")
    planes = [_PLANE.unpack_from(params, _GLOBAL.size + i * _PLANE.size) for i in range(sum(sizes))]
    offset = _GLOBAL.size + sum(sizes) * _PLANE.size
    weights = []
    for size in sizes:
        for p in range(size):
            weights.append(np.frombuffer(params, dtype=np.int8, count=n_weights(p), offset=offset).astype(np.int64))
            offset += n_weights(p)
    for _, rmin, rmax, _, _ in planes:
        if rmin >= rmax or rmax - rmin + 1 > MAX_ALPHABET:
            raise BitstreamError("entropy method parameters: invalid residual range")
    if sum(rmax - rmin + 1 for _, rmin, rmax, _, _ in planes) > MAX_TOTAL_ALPHABET:
        raise BitstreamError(f"entropy method parameters: residual alphabets exceed {MAX_TOTAL_ALPHABET} symbols in all")
    return levels, (fine_q, coarse_q), step_q, shapes, planes, weights


def decode(params: bytes, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    import constriction

    channels = shape[0]
    limit = _GLOBAL.size + max(
        sum(s[0] for s in group_shapes(shape, levels)) * _PLANE.size + sum(n_weights(p) for s in group_shapes(shape, levels) for p in range(s[0]))
        for levels in LEVELS
    )
    levels, gains_q, step_q, shapes, planes, weights = _parse_params(inflate_bounded(params, limit, "entropy method parameters"), shape)
    if len(payload) % 4:
        raise BitstreamError("entropy payload length is not a multiple of 4")
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    family = constriction.stream.model.Categorical(perfect=False)
    tables = [residual_tables(decay_bytes(base, slope), rmin, rmax) for _, rmin, rmax, base, slope in planes]
    groups = []
    first = 0
    for group_shape, group_step in zip(shapes, group_steps(step_q, gains_q, levels, channels)):
        layout = _layout(*group_shape[1:])
        symbols, residuals = layout.empty(group_shape[0]), layout.empty(group_shape[0])
        for front in layout.fronts:
            for p in range(group_shape[0]):
                feats = features(symbols, p, layout, front)
                below, fraction = predict(feats, weights[first + p])
                bins = activity_bins(feats, residuals, p, layout, front)
                try:
                    coded = decoder.decode(family, tables[first + p][bins, fraction])
                except Exception as exc:  # constriction reports malformed data with its own exceptions
                    raise BitstreamError(f"corrupt entropy payload: {exc}") from None
                residuals[p, front] = coded.astype(np.int64) + planes[first + p][1]
                symbols[p, front] = np.clip(below + residuals[p, front], -SYMBOL_LIMIT, SYMBOL_LIMIT)
        means = np.array([planes[first + p][0] for p in range(group_shape[0])], dtype=np.float64)[:, None, None] / MEAN_SCALE
        groups.append(means + symbols[:, :-1].reshape(group_shape) * group_step[:, None, None])
        first += group_shape[0]
    return recompose(groups, shape, levels).astype(np.float32)
