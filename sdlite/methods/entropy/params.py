"""The entropy method's parameters (side information): their byte layout, packing and checked parsing.

Layout before deflate (big-endian): levels (B), finest-detail gain (B), next-level gain (B), base step
(H); then per plane in coding order mean (h), rmin (h), rmax (h), decay base (B), decay slope (B); then
each plane's int8 predictor weights (context.n_weights(p) of them). The whole is deflated
(PARAMS_ZLIB_LEVEL); the decoder inflates at most max_raw_size(shape) bytes.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ...deflate import inflate_bounded
from ...errors import BitstreamError
from .context import n_weights
from .probability import MAX_ALPHABET, MAX_TOTAL_ALPHABET
from .transform import LEVELS, group_shapes

MEAN_SCALE = 64  # plane means: int16 in 1/64 raw-latent units
PARAMS_ZLIB_LEVEL = 9
GLOBAL = struct.Struct(">BBBH")  # levels, finest-detail gain, next-level gain, base step
PLANE = struct.Struct(">hhhBB")  # mean, rmin, rmax, decay base, decay slope


@dataclass(frozen=True)
class PlaneHeader:
    mean_q: int
    rmin: int
    rmax: int
    decay_base: int
    decay_slope: int


@dataclass(frozen=True)
class Params:
    levels: int
    gains_q: tuple[int, int]
    step_q: int
    planes: list  # [PlaneHeader], coding order
    weights: list  # [np.ndarray int64], one per plane

    def raw(self) -> bytes:
        out = bytearray(GLOBAL.pack(self.levels, *self.gains_q, self.step_q))
        for p in self.planes:
            out += PLANE.pack(p.mean_q, p.rmin, p.rmax, p.decay_base, p.decay_slope)
        for weights in self.weights:
            out += np.asarray(weights, dtype=np.int8).tobytes()
        return bytes(out)

    def pack(self) -> bytes:
        return zlib.compress(self.raw(), PARAMS_ZLIB_LEVEL)


def raw_size(shape: tuple[int, int, int], levels: int) -> int:
    sizes = [s[0] for s in group_shapes(shape, levels)]
    return GLOBAL.size + sum(sizes) * PLANE.size + sum(n_weights(p) for size in sizes for p in range(size))


def max_raw_size(shape: tuple[int, int, int]) -> int:
    return max(raw_size(shape, levels) for levels in LEVELS)


def parse(packed: bytes, shape: tuple[int, int, int]) -> Params:
    raw = inflate_bounded(packed, max_raw_size(shape), "entropy method parameters")
    if len(raw) < GLOBAL.size:
        raise BitstreamError("entropy method parameters are truncated")
    levels, fine_q, coarse_q, step_q = GLOBAL.unpack_from(raw)
    if levels not in LEVELS or fine_q == 0 or coarse_q == 0 or step_q == 0:
        raise BitstreamError(f"entropy method parameters are invalid (levels {levels}, gains {fine_q}/{coarse_q}, step {step_q})")
    expected = raw_size(shape, levels)
    if len(raw) != expected:
        raise BitstreamError(f"entropy method parameters: expected {expected} bytes, got {len(raw)}")
    sizes = [s[0] for s in group_shapes(shape, levels)]
    count = sum(sizes)
    planes = [PlaneHeader(*PLANE.unpack_from(raw, GLOBAL.size + i * PLANE.size)) for i in range(count)]
    offset = GLOBAL.size + count * PLANE.size
    weights = []
    for size in sizes:
        for p in range(size):
            weights.append(np.frombuffer(raw, dtype=np.int8, count=n_weights(p), offset=offset).astype(np.int64))
            offset += n_weights(p)
    for plane in planes:
        if plane.rmin >= plane.rmax or plane.rmax - plane.rmin + 1 > MAX_ALPHABET:
            raise BitstreamError("entropy method parameters: invalid residual range")
    if sum(p.rmax - p.rmin + 1 for p in planes) > MAX_TOTAL_ALPHABET:
        raise BitstreamError(f"entropy method parameters: residual alphabets exceed {MAX_TOTAL_ALPHABET} symbols in all")
    return Params(levels, (fine_q, coarse_q), step_q, planes, weights)
