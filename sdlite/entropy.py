"""Method "entropy": transform, per-band uniform quantization, a context model, range coding.

Encoding a raw latent z of shape (C, h, w):

1. Transform: a one-level orthonormal 2-D Haar transform of each channel (sides padded to even by edge
   replication) gives 4*C half-size planes, ordered band-major: LL of every channel, then LH, HL, HH.
   The VAE decoder is less sensitive to high-frequency latent error (measured with VAElight: about 2x),
   so high bands get a coarser step: step * band_gain.
2. Symbols s[p] = round((plane[p] - mean_p) / step_p); the means, the step and the gain are integers
   in the stream (MEAN_SCALE, STEP_SCALE, GAIN_SCALE units). The step follows the rate target.
3. Planes are coded row by row; within a row, plane by plane. A symbol's prediction is an integer
   linear combination (WEIGHT_SCALE units, least squares per image) of already decoded neighbours:
   the two rows above in its plane, and the same and previous row of up to MAX_CROSS earlier planes.
   The residual r = s - prediction is coded.
4. The residual's probability model is a two-sided geometric distribution whose decay byte depends on
   the plane and on an activity bin (local gradients and nearby residual sizes), as
   clip(base_p + slope_p * bin): two bytes per plane. Frequency tables come from integer arithmetic.

Everything the decoder's model depends on is integer data from the stream and integer maths, so the
decoder's probabilities are bit-identical on every machine and thread count. Each row of a plane is
one batched call into constriction's range coder.
"""

from __future__ import annotations

import struct

import numpy as np

from .bitstream import CONTAINER_OVERHEAD
from .errors import BitstreamError, OptionError

TRANSFORM_NONE, TRANSFORM_HAAR = 0, 1
MEAN_SCALE = 64  # plane means: int16 in 1/64 raw-latent units
STEP_SCALE = 1024  # base step: uint16 in 1/1024 raw-latent units (1/1024 .. 64)
GAIN_SCALE = 16  # high-band step multiplier: uint8 in 1/16 units
DEFAULT_BAND_GAIN = 2.0  # measured best on VAElight + Kodak (see BENCHMARKS.md)
WEIGHT_SCALE = 32  # predictor weights: int8 in 1/32 units (-4 .. +3.97)
MAX_CROSS = 2  # earlier planes a prediction may look at
SPATIAL_FEATURES = 4  # N, NW, NE, NN
ACTIVITY_THRESHOLDS = np.array([1, 2, 3, 4, 6, 8, 11, 15, 20, 28, 40], dtype=np.int64)
N_BINS = len(ACTIVITY_THRESHOLDS) + 1
TABLE_ONE = 1 << 20  # frequency of residual 0 before normalisation
MAX_ALPHABET = 4096  # residual alphabet per plane; the step is raised rather than exceed it
SYMBOL_LIMIT = 32767  # predictions are clipped to +-this, which bounds decoding of crafted streams

QUALITY_MIN, QUALITY_MAX = 1, 100
DEFAULT_QUALITY = 50
STEP_COARSEST, STEP_FINEST = 16.0, 0.25  # base step at quality 1 and 100, geometric in between (50 -> 2.04)
TARGET_TOLERANCE = 0.05  # target_bytes: aim for [95 %, 100 %] of the target
_SEARCH_ITERATIONS = 20

_GLOBAL = struct.Struct(">BBH")  # transform, band gain, base step
_PLANE = struct.Struct(">hhhBB")  # mean, rmin, rmax, decay base, decay slope


# --- integer probability tables ------------------------------------------------------------------
def theta_numerator(q) -> np.ndarray:
    """Geometric decay theta = num / 65536 from a byte q: 1 - theta = ((256 - q) / 256) ** 2."""
    q = np.asarray(q, dtype=np.int64)
    return 65536 - (256 - q) ** 2


def residual_tables(q, rmin: int, rmax: int) -> np.ndarray:
    """Normalised float64 probabilities over residuals rmin..rmax, one row per decay byte in q.

    The frequencies are exact integers (TABLE_ONE * theta**|r| by repeated integer multiply-shift,
    floored at 1); dividing by their exact sum is correctly rounded IEEE arithmetic, so every machine
    gets the same floats, which constriction quantizes deterministically."""
    num = np.atleast_1d(theta_numerator(q))
    half = max(-rmin, rmax, 0)
    magnitudes = np.empty((len(num), half + 1), dtype=np.int64)
    magnitudes[:, 0] = TABLE_ONE
    for k in range(1, half + 1):
        magnitudes[:, k] = (magnitudes[:, k - 1] * num) >> 16
    freq = np.maximum(magnitudes, 1)[:, np.abs(np.arange(rmin, rmax + 1))]
    return freq / freq.sum(axis=1, keepdims=True)


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
    return SPATIAL_FEATURES + 2 * min(plane, MAX_CROSS)


def features(symbols: np.ndarray, p: int, y: int) -> np.ndarray:
    """(n_weights(p), w) int64 features of plane p, row y, from already decoded symbols only."""
    width = symbols.shape[2]
    zeros = np.zeros(width, np.int64)
    above = symbols[p, y - 1] if y >= 1 else zeros
    above2 = symbols[p, y - 2] if y >= 2 else above
    padded = np.concatenate([above[:1], above, above[-1:]])
    rows = [above, padded[:-2], padded[2:], above2]
    for k in range(max(0, p - MAX_CROSS), p):
        rows.append(symbols[k, y])
        rows.append(symbols[k, y - 1] if y >= 1 else zeros)
    return np.stack(rows)


def predict(feats: np.ndarray, weights: np.ndarray) -> np.ndarray:
    acc = (weights[:, None].astype(np.int64) * feats).sum(axis=0)
    return np.clip((acc + WEIGHT_SCALE // 2) // WEIGHT_SCALE, -SYMBOL_LIMIT, SYMBOL_LIMIT)


def activity_bins(feats: np.ndarray, residuals: np.ndarray, p: int, y: int) -> np.ndarray:
    """Context bin from local gradients and the residual sizes already decoded nearby."""
    north, northwest, northeast, north2 = feats[:SPATIAL_FEATURES]
    act = np.abs(north - northwest) + np.abs(northeast - north) + np.abs(north - north2)
    if y >= 1:
        act = act + 2 * np.abs(residuals[p, y - 1])
    if p >= 1:
        act = act + 2 * np.abs(residuals[p - 1, y])
    return np.searchsorted(ACTIVITY_THRESHOLDS, act, side="right")


# --- encoder ----------------------------------------------------------------------------------------
def _fit_weights(symbols: np.ndarray, p: int) -> np.ndarray:
    """Least-squares predictor for plane p, quantized to int8 (fixed-order sums: no threaded BLAS)."""
    feats = np.concatenate([features(symbols, p, y) for y in range(symbols.shape[1])], axis=1).astype(np.float64)
    target = symbols[p].reshape(-1).astype(np.float64)
    gram = np.einsum("in,jn->ij", feats, feats, optimize=False) + 1e-3 * np.eye(len(feats))
    rhs = np.einsum("in,n->i", feats, target, optimize=False)
    try:
        solution = np.linalg.solve(gram, rhs)
    except np.linalg.LinAlgError:
        solution = np.zeros(len(feats))
    return np.clip(np.rint(solution * WEIGHT_SCALE), -128, 127).astype(np.int8)


class _Plan:
    """Everything the encoder decides for one base step; estimated_bytes() predicts the stream size."""

    def __init__(self, latents: np.ndarray, step_q: int, gain_q: int, transform: int):
        self.shape = latents.shape
        self.transform, self.step_q, self.gain_q = transform, int(step_q), int(gain_q)
        planes = haar_forward(latents) if transform == TRANSFORM_HAAR else latents.astype(np.float64)
        count = len(planes)
        self.means_q = np.clip(np.rint(planes.reshape(count, -1).mean(axis=1) * MEAN_SCALE), -32768, 32767).astype(np.int64)
        scaled = (planes - (self.means_q / MEAN_SCALE)[:, None, None]) / plane_steps(self.step_q, self.gain_q, transform, count)[:, None, None]
        self.symbols = np.clip(np.rint(scaled), -SYMBOL_LIMIT, SYMBOL_LIMIT).astype(np.int64)
        self.weights = [_fit_weights(self.symbols, p) for p in range(count)]
        self.residuals = np.zeros_like(self.symbols)
        self.bins = np.zeros_like(self.symbols)
        for y in range(self.symbols.shape[1]):
            for p in range(count):
                feats = features(self.symbols, p, y)
                self.residuals[p, y] = self.symbols[p, y] - predict(feats, self.weights[p])
                self.bins[p, y] = activity_bins(feats, self.residuals, p, y)
        self.rmin = self.residuals.reshape(count, -1).min(axis=1)
        # constriction needs at least two symbols in an alphabet
        self.rmax = np.maximum(self.residuals.reshape(count, -1).max(axis=1), self.rmin + 1)
        self.decay = np.zeros((count, 2), dtype=np.int64)
        self.bits = 0.0
        if self.alphabet_ok:
            self._choose_decays()

    def _choose_decays(self) -> None:
        """Per plane, the (base, slope) whose per-bin decay bytes minimise the ideal code length."""
        candidates = np.arange(256)
        bases, slopes = np.meshgrid(np.arange(256), np.arange(32), indexing="ij")
        chosen = np.clip(bases[..., None] + slopes[..., None] * np.arange(N_BINS), 0, 255)  # (256, 32, bins)
        for p in range(len(self.symbols)):
            rmin, rmax = int(self.rmin[p]), int(self.rmax[p])
            log_probs = np.log2(residual_tables(candidates, rmin, rmax))  # (256, alphabet)
            hist = np.zeros((N_BINS, rmax - rmin + 1))
            np.add.at(hist, (self.bins[p].ravel(), (self.residuals[p] - rmin).ravel()), 1)
            costs = -(log_probs @ hist.T)  # (256 decay bytes, bins)
            total = costs[chosen, np.arange(N_BINS)].sum(axis=-1)  # (256, 32)
            base, slope = np.unravel_index(int(np.argmin(total)), total.shape)
            self.decay[p] = (base, slope)
            self.bits += float(total[base, slope])

    @property
    def alphabet_ok(self) -> bool:
        return bool(np.all(self.rmax - self.rmin + 1 <= MAX_ALPHABET))

    def params(self) -> bytes:
        out = bytearray(_GLOBAL.pack(self.transform, self.gain_q, self.step_q))
        for p in range(len(self.symbols)):
            out += _PLANE.pack(int(self.means_q[p]), int(self.rmin[p]), int(self.rmax[p]), int(self.decay[p, 0]), int(self.decay[p, 1]))
        for weights in self.weights:
            out += weights.tobytes()
        return bytes(out)

    def estimated_bytes(self) -> int:
        return CONTAINER_OVERHEAD + len(self.params()) + 4 * (int(self.bits) // 32 + 2)

    def payload(self) -> bytes:
        import constriction

        family = constriction.stream.model.Categorical(perfect=False)
        encoder = constriction.stream.queue.RangeEncoder()
        tables = [residual_tables(decay_bytes(*self.decay[p]), int(self.rmin[p]), int(self.rmax[p])) for p in range(len(self.symbols))]
        for y in range(self.symbols.shape[1]):
            for p in range(len(self.symbols)):
                encoder.encode((self.residuals[p, y] - self.rmin[p]).astype(np.int32), family, tables[p][self.bins[p, y]])
        return encoder.get_compressed().astype("<u4").tobytes()


def plane_steps(step_q: int, gain_q: int, transform: int, count: int) -> np.ndarray:
    steps = np.full(count, step_q / STEP_SCALE, dtype=np.float64)
    if transform == TRANSFORM_HAAR:
        steps[count // 4 :] *= gain_q / GAIN_SCALE
    return steps


def quality_to_step(quality) -> float:
    if isinstance(quality, bool) or not isinstance(quality, (int, np.integer)) or not QUALITY_MIN <= quality <= QUALITY_MAX:
        raise OptionError(f"quality must be an integer from {QUALITY_MIN} to {QUALITY_MAX}, got {quality!r}")
    fraction = (quality - QUALITY_MIN) / (QUALITY_MAX - QUALITY_MIN)
    return STEP_COARSEST * (STEP_FINEST / STEP_COARSEST) ** fraction


def plan_for_step(latents: np.ndarray, step: float, *, band_gain: float = DEFAULT_BAND_GAIN, transform: int = TRANSFORM_HAAR) -> _Plan:
    gain_q = int(np.clip(round(band_gain * GAIN_SCALE), 1, 255))
    step_q = int(np.clip(round(step * STEP_SCALE), 1, 65535))
    plan = _Plan(latents, step_q, gain_q, transform)
    while not plan.alphabet_ok and step_q < 65535:  # extreme latents or a tiny step: coarsen until it fits
        step_q = min(65535, step_q * 2)
        plan = _Plan(latents, step_q, gain_q, transform)
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
        if best.estimated_bytes() >= (1 - TARGET_TOLERANCE / 2) * target_bytes:
            break
    return best


def encode(latents: np.ndarray, *, quality: int | None = None, target_bytes: int | None = None, band_gain: float = DEFAULT_BAND_GAIN):
    """Latents (C, h, w) -> Encoded. quality 1..100 (default DEFAULT_QUALITY) or target_bytes."""
    from .methods import Encoded

    if quality is not None and target_bytes is not None:
        raise OptionError("pass quality or target_bytes, not both")
    if not 1 / GAIN_SCALE <= band_gain <= 255 / GAIN_SCALE:
        raise OptionError(f"band_gain must be between {1 / GAIN_SCALE} and {255 / GAIN_SCALE}, got {band_gain}")
    options = {"band_gain": band_gain}
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
    return Encoded(plan.params(), payload, {"step": plan.step_q / STEP_SCALE, "band_gain": plan.gain_q / GAIN_SCALE, "clipped": 0})


# --- decoder ----------------------------------------------------------------------------------------
def _parse_params(params: bytes, count_for):
    if len(params) < _GLOBAL.size:
        raise BitstreamError("entropy method parameters are truncated")
    transform, gain_q, step_q = _GLOBAL.unpack_from(params)
    if transform not in (TRANSFORM_NONE, TRANSFORM_HAAR) or gain_q == 0 or step_q == 0:
        raise BitstreamError(f"entropy method parameters are invalid (transform {transform}, gain {gain_q}, step {step_q})")
    count = count_for(transform)
    expected = _GLOBAL.size + count * _PLANE.size + sum(n_weights(p) for p in range(count))
    if len(params) != expected:
        raise BitstreamError(f"entropy method parameters: expected {expected} bytes, got {len(params)}")
    planes = [_PLANE.unpack_from(params, _GLOBAL.size + p * _PLANE.size) for p in range(count)]
    offset = _GLOBAL.size + count * _PLANE.size
    weights = []
    for p in range(count):
        weights.append(np.frombuffer(params, dtype=np.int8, count=n_weights(p), offset=offset).astype(np.int64))
        offset += n_weights(p)
    for _, rmin, rmax, _, _ in planes:
        if rmin >= rmax or rmax - rmin + 1 > MAX_ALPHABET:
            raise BitstreamError("entropy method parameters: invalid residual range")
    return transform, gain_q, step_q, planes, weights


def decode(params: bytes, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    import constriction

    channels, height, width = shape
    half = ((height + 1) // 2, (width + 1) // 2)
    transform, gain_q, step_q, planes, weights = _parse_params(params, lambda t: 4 * channels if t == TRANSFORM_HAAR else channels)
    plane_shape = (len(planes), *half) if transform == TRANSFORM_HAAR else shape
    if len(payload) % 4:
        raise BitstreamError("entropy payload length is not a multiple of 4")
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    family = constriction.stream.model.Categorical(perfect=False)
    tables = [residual_tables(decay_bytes(base, slope), rmin, rmax) for _, rmin, rmax, base, slope in planes]
    symbols = np.zeros(plane_shape, dtype=np.int64)
    residuals = np.zeros(plane_shape, dtype=np.int64)
    for y in range(plane_shape[1]):
        for p, (_, rmin, _, _, _) in enumerate(planes):
            feats = features(symbols, p, y)
            prediction = predict(feats, weights[p])
            bins = activity_bins(feats, residuals, p, y)
            try:
                coded = decoder.decode(family, tables[p][bins])
            except Exception as exc:  # constriction reports malformed data with its own exceptions
                raise BitstreamError(f"corrupt entropy payload: {exc}") from None
            residuals[p, y] = coded.astype(np.int64) + rmin
            symbols[p, y] = np.clip(prediction + residuals[p, y], -SYMBOL_LIMIT, SYMBOL_LIMIT)
    means = np.array([plane[0] for plane in planes], dtype=np.float64)[:, None, None] / MEAN_SCALE
    values = means + symbols * plane_steps(step_q, gain_q, transform, len(planes))[:, None, None]
    if transform == TRANSFORM_HAAR:
        values = haar_inverse(values, shape)
    return values.astype(np.float32)
