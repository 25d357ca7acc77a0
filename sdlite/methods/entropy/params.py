"""The entropy method's parameters (side information): their byte layout, packing and checked parsing.

Format versions 4 and 5 (the same layout; version 5 adds channel transform 5), before deflate (big-endian): levels (B), finest-detail gain (B), next-level gain (B),
base step (H, 1/STEP_SCALE coding units), flags (B), channel transform id (B; see channels.py); a
bitmap of empty planes (one bit per plane in coding order, most significant bit first: an empty plane's
symbols are all 0 and nothing of it is coded); per group its residual range rmin (h), rmax (h); per plane
its mean (h, 1/MEAN_SCALE coding units); per coded (non-empty) plane its decay base (B) and slope (B);
then each coded plane's int8 predictor weights (context.n_weights(p) of them, p its index in the group);
then, when flags has FLAG_RECONSTRUCTION_GAINS, one byte per coded plane: its reconstruction gain in
1/RECONSTRUCTION_GAIN_ONE units (the decoder rebuilds a plane as mean + gain * symbols * step; the
encoder fits the gain by least squares on the latent). The whole is deflated (PARAMS_ZLIB_LEVEL); the
decoder inflates at most max_raw_size(shape) bytes.

Format versions 2 and 3 (read only) had no transform byte (identity), no bitmap, and each plane its own
residual range: mean (h), rmin (h), rmax (h), decay base (B), decay slope (B); version 2 had no flags.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

import numpy as np

from ...deflate import inflate_bounded
from ...errors import BitstreamError
from . import channels
from .context import BLOCK_SIDE, n_weights
from .probability import MAX_ALPHABET, MAX_RESIDUAL, MAX_TOTAL_ALPHABET
from .transform import LEVELS, group_shapes

MEAN_SCALE = 64  # plane means: int16 in 1/64 coding units
PARAMS_ZLIB_LEVEL = 9
GLOBAL_V2 = struct.Struct(">BBBH")  # levels, finest-detail gain, next-level gain, base step
GLOBAL_V3 = struct.Struct(">BBBHB")  # the same, then flags
GLOBAL = struct.Struct(">BBBHBB")  # the same, then the channel transform (format version 4)
PLANE_V3 = struct.Struct(">hhhBB")  # mean, rmin, rmax, decay base, decay slope
RANGE = struct.Struct(">hh")  # a group's rmin, rmax
MEAN = struct.Struct(">h")
DECAY = struct.Struct(">BB")
FLAG_RECONSTRUCTION_GAINS = 1
KNOWN_FLAGS = FLAG_RECONSTRUCTION_GAINS
RECONSTRUCTION_GAIN_ONE = 128  # gain bytes: 1..255 -> 1/128 .. 1.99
MAX_DECODE_WORK = 1 << 27
"""Format version 4: bound on the sum over groups of (coded symbols * residual alphabet), the decoder's
table work (measured on this project's CPU: about 3-5 ns per entry, so well under a second). The encoder
coarsens its step rather than exceed it; a stream that claims more is refused before decoding."""


@dataclass(frozen=True)
class PlaneHeader:
    mean_q: int
    rmin: int
    rmax: int
    decay_base: int
    decay_slope: int
    empty: bool = False  # format version 4: all symbols 0, nothing coded


@dataclass(frozen=True)
class Params:
    levels: int
    gains_q: tuple[int, int]
    step_q: int
    planes: list  # [PlaneHeader], coding order
    weights: list  # [np.ndarray int64 or None (empty plane)], one per plane
    reconstruction_gains: tuple | None = None  # one byte per plane (1 for empty planes), or None: gain 1
    transform: int = channels.IDENTITY.id
    version: int = 5

    @property
    def flags(self) -> int:
        return FLAG_RECONSTRUCTION_GAINS if self.reconstruction_gains is not None else 0

    def raw(self) -> bytes:
        """Format versions 4 and 5's layout (this sdlite writes 5)."""
        out = bytearray(GLOBAL.pack(self.levels, *self.gains_q, self.step_q, self.flags, self.transform))
        out += _bitmap([p.empty for p in self.planes])
        first = 0
        for size in self.group_sizes():
            out += RANGE.pack(self.planes[first].rmin, self.planes[first].rmax)
            first += size
        for p in self.planes:
            out += MEAN.pack(p.mean_q)
        for p in self.planes:
            if not p.empty:
                out += DECAY.pack(p.decay_base, p.decay_slope)
        for plane, weights in zip(self.planes, self.weights):
            if not plane.empty:
                out += np.asarray(weights, dtype=np.int8).tobytes()
        if self.reconstruction_gains is not None:
            out += bytes(g for plane, g in zip(self.planes, self.reconstruction_gains) if not plane.empty)
        return bytes(out)

    def group_sizes(self) -> list[int]:
        """Planes per group, coarsest first: all planes for levels 0 and 1; 4C and 3C for levels 2 (7C planes)."""
        return [len(self.planes)] if self.levels < 2 else [4 * len(self.planes) // 7, 3 * len(self.planes) // 7]

    def gain_of(self, index: int) -> float:
        return 1.0 if self.reconstruction_gains is None else self.reconstruction_gains[index] / RECONSTRUCTION_GAIN_ONE

    def pack(self) -> bytes:
        return zlib.compress(self.raw(), PARAMS_ZLIB_LEVEL)


def _bitmap(flags: list[bool]) -> bytes:
    out = bytearray((len(flags) + 7) // 8)
    for i, flag in enumerate(flags):
        if flag:
            out[i // 8] |= 0x80 >> (i % 8)
    return bytes(out)


def _unbitmap(data: bytes, count: int) -> list[bool]:
    return [bool(data[i // 8] & (0x80 >> (i % 8))) for i in range(count)]


def raw_size(shape: tuple[int, int, int], levels: int, *, version: int = 4, flags: int = 0, empty: list[bool] | None = None) -> int:
    """Bytes of the raw parameters for a shape; format version 4 also depends on which planes are empty."""
    sizes = [s[0] for s in group_shapes(shape, levels)]
    count = sum(sizes)
    if version < 4:
        head = GLOBAL_V3.size if version >= 3 else GLOBAL_V2.size
        gains = count if flags & FLAG_RECONSTRUCTION_GAINS else 0
        return head + count * PLANE_V3.size + sum(n_weights(p) for size in sizes for p in range(size)) + gains
    empty = empty or [False] * count
    coded = [[not empty[first + p] for p in range(size)] for first, size in zip(np.cumsum([0] + sizes[:-1]), sizes)]
    weights = sum(n_weights(p) for group in coded for p, is_coded in enumerate(group) if is_coded)
    n_coded = count - sum(empty)
    gains = n_coded if flags & FLAG_RECONSTRUCTION_GAINS else 0
    return GLOBAL.size + (count + 7) // 8 + len(sizes) * RANGE.size + count * MEAN.size + n_coded * DECAY.size + weights + gains


def max_raw_size(shape: tuple[int, int, int]) -> int:
    return max(raw_size(shape, levels, version=version, flags=KNOWN_FLAGS) for levels in LEVELS for version in (3, 4))


def parse(packed: bytes, shape: tuple[int, int, int], version: int = 4) -> Params:
    raw = inflate_bounded(packed, max_raw_size(shape), "entropy method parameters")
    if version < 4:
        return _parse_v3(raw, shape, version)
    if len(raw) < GLOBAL.size:
        raise BitstreamError("entropy method parameters are truncated")
    levels, fine_q, coarse_q, step_q, flags, transform_id = GLOBAL.unpack_from(raw)
    _check_global(levels, fine_q, coarse_q, step_q, flags)
    transform = channels.by_id(transform_id)
    transform.check_channels(shape[0])
    transform.check_version(version)
    sizes = [s[0] for s in group_shapes(shape, levels)]
    count = sum(sizes)
    offset = GLOBAL.size
    if len(raw) < offset + (count + 7) // 8:
        raise BitstreamError("entropy method parameters are truncated")
    empty = _unbitmap(raw[offset:], count)
    offset += (count + 7) // 8
    expected = raw_size(shape, levels, flags=flags, empty=empty)
    if len(raw) != expected:
        raise BitstreamError(f"entropy method parameters: expected {expected} bytes, got {len(raw)}")
    ranges = [RANGE.unpack_from(raw, offset + i * RANGE.size) for i in range(len(sizes))]
    offset += len(sizes) * RANGE.size
    means = [MEAN.unpack_from(raw, offset + i * MEAN.size)[0] for i in range(count)]
    offset += count * MEAN.size
    planes, plane_ranges = [], [r for r, size in zip(ranges, sizes) for _ in range(size)]
    for i in range(count):
        decay = (0, 0)
        if not empty[i]:
            decay = DECAY.unpack_from(raw, offset)
            offset += DECAY.size
        planes.append(PlaneHeader(means[i], *plane_ranges[i], *decay, empty=empty[i]))
    weights = []
    for size in sizes:
        for p in range(size):
            if empty[len(weights)]:
                weights.append(None)
                continue
            weights.append(np.frombuffer(raw, dtype=np.int8, count=n_weights(p), offset=offset).astype(np.int64))
            offset += n_weights(p)
    gains = None
    if flags & FLAG_RECONSTRUCTION_GAINS:
        stored = iter(raw[offset:])
        gains = tuple(1 if empty[i] else next(stored) for i in range(count))
        if 0 in gains:
            raise BitstreamError("entropy method parameters: a reconstruction gain is zero")
    first = 0
    work = 0
    for (rmin, rmax), group_shape in zip(ranges, group_shapes(shape, levels)):
        size = group_shape[0]
        if rmin >= rmax or rmax - rmin + 1 > MAX_ALPHABET or -rmin > MAX_RESIDUAL or rmax > MAX_RESIDUAL:
            raise BitstreamError(f"entropy method parameters: invalid residual range {rmin}..{rmax}")
        coded = size - sum(empty[first:first + size])
        work += coded * group_shape[1] * group_shape[2] * (rmax - rmin + 1)
        first += size
    if work > MAX_DECODE_WORK:
        raise BitstreamError(f"entropy method parameters claim {work} table entries of decoding work, over the limit of {MAX_DECODE_WORK}")
    return Params(levels, (fine_q, coarse_q), step_q, planes, weights, gains, transform.id, version)


def _check_global(levels, fine_q, coarse_q, step_q, flags) -> None:
    if levels not in LEVELS or fine_q == 0 or coarse_q == 0 or step_q == 0 or flags & ~KNOWN_FLAGS:
        raise BitstreamError(
            f"entropy method parameters are invalid (levels {levels}, gains {fine_q}/{coarse_q}, step {step_q}, flags {flags})"
        )


def _parse_v3(raw: bytes, shape: tuple[int, int, int], version: int) -> Params:
    head = GLOBAL_V3 if version >= 3 else GLOBAL_V2
    if len(raw) < head.size:
        raise BitstreamError("entropy method parameters are truncated")
    if version >= 3:
        levels, fine_q, coarse_q, step_q, flags = head.unpack_from(raw)
    else:
        (levels, fine_q, coarse_q, step_q), flags = head.unpack_from(raw), 0
    _check_global(levels, fine_q, coarse_q, step_q, flags)
    expected = raw_size(shape, levels, version=version, flags=flags)
    if len(raw) != expected:
        raise BitstreamError(f"entropy method parameters: expected {expected} bytes, got {len(raw)}")
    sizes = [s[0] for s in group_shapes(shape, levels)]
    count = sum(sizes)
    planes = [PlaneHeader(*PLANE_V3.unpack_from(raw, head.size + i * PLANE_V3.size)) for i in range(count)]
    offset = head.size + count * PLANE_V3.size
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
    return Params(levels, (fine_q, coarse_q), step_q, planes, weights, gains, channels.IDENTITY.id, version)


__all__ = ["Params", "PlaneHeader", "parse", "raw_size", "max_raw_size", "MEAN_SCALE", "BLOCK_SIDE"]
