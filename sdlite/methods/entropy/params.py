"""The entropy method's parameters (side information): their byte layout, packing and checked parsing.

Layout before deflate (big-endian): levels (B), finest-detail gain (B), next-level gain (B), base step
(H), and from format version 3 a flags byte (B); then per plane in coding order mean (h), rmin (h),
rmax (h), decay base (B), decay slope (B); then each plane's int8 predictor weights
(context.n_weights(p) of them); then, when flags has FLAG_RECONSTRUCTION_GAINS, one byte per plane:
its reconstruction gain in 1/RECONSTRUCTION_GAIN_ONE units (the decoder rebuilds a plane as mean + gain *
symbols * step; the encoder fits the gain by least squares on the latent). The whole is deflated
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
GLOBAL_V2 = struct.Struct(">BBBH")  # levels, finest-detail gain, next-level gain, base step
GLOBAL = struct.Struct(">BBBHB")  # the same, then flags (format version 3)
PLANE = struct.Struct(">hhhBB")  # mean, rmin, rmax, decay base, decay slope
FLAG_RECONSTRUCTION_GAINS = 1
KNOWN_FLAGS = FLAG_RECONSTRUCTION_GAINS
RECONSTRUCTION_GAIN_ONE = 128  # gain bytes: 1..255 -> 1/128 .. 1.99


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
    reconstruction_gains: tuple | None = None  # one byte per plane, or None: gain 1

    @property
    def flags(self) -> int:
        return FLAG_RECONSTRUCTION_GAINS if self.reconstruction_gains is not None else 0

    def raw(self) -> bytes:
        out = bytearray(GLOBAL.pack(self.levels, *self.gains_q, self.step_q, self.flags))
        for p in self.planes:
            out += PLANE.pack(p.mean_q, p.rmin, p.rmax, p.decay_base, p.decay_slope)
        for weights in self.weights:
            out += np.asarray(weights, dtype=np.int8).tobytes()
        if self.reconstruction_gains is not None:
            out += bytes(self.reconstruction_gains)
        return bytes(out)

    def gain_of(self, index: int) -> float:
        return 1.0 if self.reconstruction_gains is None else self.reconstruction_gains[index] / RECONSTRUCTION_GAIN_ONE

    def pack(self) -> bytes:
        return zlib.compress(self.raw(), PARAMS_ZLIB_LEVEL)


def raw_size(shape: tuple[int, int, int], levels: int, *, version: int = 3, flags: int = 0) -> int:
    sizes = [s[0] for s in group_shapes(shape, levels)]
    head = GLOBAL.size if version >= 3 else GLOBAL_V2.size
    gains = sum(sizes) if flags & FLAG_RECONSTRUCTION_GAINS else 0
    return head + sum(sizes) * PLANE.size + sum(n_weights(p) for size in sizes for p in range(size)) + gains


def max_raw_size(shape: tuple[int, int, int]) -> int:
    return max(raw_size(shape, levels, flags=KNOWN_FLAGS) for levels in LEVELS)


def parse(packed: bytes, shape: tuple[int, int, int], version: int = 3) -> Params:
    raw = inflate_bounded(packed, max_raw_size(shape), "entropy method parameters")
    head = GLOBAL if version >= 3 else GLOBAL_V2
    if len(raw) < head.size:
        raise BitstreamError("entropy method parameters are truncated")
    if version >= 3:
        levels, fine_q, coarse_q, step_q, flags = head.unpack_from(raw)
    else:
        (levels, fine_q, coarse_q, step_q), flags = head.unpack_from(raw), 0
    if levels not in LEVELS or fine_q == 0 or coarse_q == 0 or step_q == 0 or flags & ~KNOWN_FLAGS:
        raise BitstreamError(
            f"entropy method parameters are invalid (levels {levels}, gains {fine_q}/{coarse_q}, step {step_q}, flags {flags})"
        )
    expected = raw_size(shape, levels, version=version, flags=flags)
    if len(raw) != expected:
        raise BitstreamError(f"entropy method parameters: expected {expected} bytes, got {len(raw)}")
    sizes = [s[0] for s in group_shapes(shape, levels)]
    count = sum(sizes)
    planes = [PlaneHeader(*PLANE.unpack_from(raw, head.size + i * PLANE.size)) for i in range(count)]
    offset = head.size + count * PLANE.size
    weights = []
    for size in sizes:
        for p in range(size):
            weights.append(np.frombuffer(raw, dtype=np.int8, count=n_weights(p), offset=offset).astype(np.int64))
            offset += n_weights(p)
    gains = None
    if flags & FLAG_RECONSTRUCTION_GAINS:
        gains = tuple(raw[offset : offset + count])
        if 0 in gains:
            raise BitstreamError("entropy method parameters: a reconstruction gain is zero")
    for plane in planes:
        if plane.rmin >= plane.rmax or plane.rmax - plane.rmin + 1 > MAX_ALPHABET:
            raise BitstreamError("entropy method parameters: invalid residual range")
    if sum(p.rmax - p.rmin + 1 for p in planes) > MAX_TOTAL_ALPHABET:
        raise BitstreamError(f"entropy method parameters: residual alphabets exceed {MAX_TOTAL_ALPHABET} symbols in all")
    return Params(levels, (fine_q, coarse_q), step_q, planes, weights, gains)
