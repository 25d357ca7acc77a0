"""A second decoder of .sdz streams, written from docs/format.md alone (plain Python integers and floats;
numpy only for elementwise float64 maths and the final float32 rounding; no constriction, nothing from
sdlite's decoder). tests/test_format_spec.py checks that it decodes the conformance corpus to the same
raw latents as sdlite: the proof that the document says enough. Slow by design (one symbol at a time)."""

from __future__ import annotations

import math
import struct
import zlib

import numpy as np

MASK = (1 << 64) - 1
THRESHOLDS = (1, 2, 3, 4, 6, 8, 11, 15, 20, 28, 40)
SD1 = 0.18215
TRANSFORM_UNITS = {0: 1.0, 1: 0.13025 / SD1, 2: 1.5305 / SD1, 3: 0.3611 / SD1, 4: 4.4, 5: 4.4}
TRANSFORM_SINCE = {5: 5}  # the first format version that may name the transform (4 otherwise)


class SpecError(Exception):
    pass


# -- section 1: container ------------------------------------------------------------------------------------------
def read_container(data: bytes) -> dict:
    if data[:4] != b"SDLZ":
        raise SpecError("magic")
    version = data[4]
    if version >= 3:
        fields = struct.unpack_from(">4sBBBBB8sIIBHHH", data)
        _, version, method, space, factor, scale, model_id, width, height, channels, lh, lw, params_len = fields
        at = struct.calcsize(">4sBBBBB8sIIBHHH")
    else:
        _, version, method, factor, model_id, width, height, channels, lh, lw, params_len = struct.unpack_from(">4sBBB8sIIBHHH", data)
        space, scale, at = 0, 8, struct.calcsize(">4sBBB8sIIBHHH")
    params = data[at:at + params_len]
    at += params_len
    (payload_len,) = struct.unpack_from(">I", data, at)
    payload = data[at + 4:at + 4 + payload_len]
    (crc,) = struct.unpack_from(">I", data, at + 4 + payload_len)
    if zlib.crc32(data[:at + 4 + payload_len]) != crc or len(data) != at + 8 + payload_len:
        raise SpecError("crc or length")
    return {"version": version, "method": method, "space": space, "factor": factor, "scale": scale, "model_id": model_id.hex(),
            "width": width, "height": height, "shape": (channels, lh, lw), "params": params, "payload": payload}


# -- section 4: palette --------------------------------------------------------------------------------------------
def decode_palette(params: bytes, payload: bytes, shape) -> np.ndarray:
    step_micro, offset2, _ = struct.unpack(">IHB", params)
    channels, h, w = shape
    raw = zlib.decompress(payload)
    entries = raw[0] + 1
    palette = raw[1:1 + entries * channels]
    indices = raw[1 + entries * channels:]
    assert len(indices) == h * w
    offset, step = np.float32(offset2 / 2), np.float32(step_micro / 1e6)
    out = np.empty(shape, dtype=np.float32)
    for y in range(h):
        for x in range(w):
            i = indices[y * w + x]
            for c in range(channels):
                out[c, y, x] = (np.float32(palette[i * channels + c]) - offset) * step
    return out


# -- section 5.6: the range coder ------------------------------------------------------------------------------------
class RangeDecoder:
    def __init__(self, payload: bytes):
        self.words = [struct.unpack_from("<I", payload, 4 * i)[0] for i in range(len(payload) // 4)]
        self.next = 0
        self.lower, self.range = 0, MASK
        first = self.words[:2]
        self.next = len(first)
        self.point = (first[0] << 32 | first[1]) if len(first) == 2 else (first[0] << 32 if first else 0)

    def decode(self, probabilities: list[float]) -> int:
        n = len(probabilities)
        total = 0.0
        for p in probabilities:
            total += p
        scale = float((1 << 24) - n) / total
        s = self.range >> 24
        quantile = ((self.point - self.lower) & MASK) // s
        if quantile >= 1 << 24:
            raise SpecError("invalid payload")
        prefix, left = 0.0, 0
        for i in range(n):
            prefix += probabilities[i]
            right = (1 << 24) if i == n - 1 else int(prefix * scale) + i + 1
            if quantile < right:
                break
            left = right
        self.lower = (self.lower + s * left) & MASK
        self.range = s * (right - left)
        if self.range < 1 << 32:
            self.lower = (self.lower << 32) & MASK
            self.range = (self.range << 32) & MASK
            word = self.words[self.next] if self.next < len(self.words) else 0
            self.next += 1
            self.point = ((self.point << 32) & MASK) | word
        return i

    def exhausted(self) -> bool:
        return self.next >= len(self.words) and (self.range == MASK or ((self.point - self.lower) & MASK) < (1 << 33) - 1)


def probabilities(q: int, rmin: int, rmax: int, fraction: int) -> list[float]:
    num = (1 << 24) - (256 - q) ** 3
    largest = max(abs(8 * r - fraction) for r in (rmin, rmax))
    magnitudes = [1 << 20]
    for _ in range(largest):
        magnitudes.append((magnitudes[-1] * num) >> 24)
    freqs = [max(magnitudes[abs(8 * r - fraction)], 1) for r in range(rmin, rmax + 1)]
    total = sum(freqs)
    return [float(f) / float(total) for f in freqs]


# -- section 5.2: parameters ----------------------------------------------------------------------------------------
def group_shapes(shape, levels):
    c, h, w = shape
    if levels == 0:
        return [shape]
    half = (c, (h + 1) // 2, (w + 1) // 2)
    if levels == 1:
        return [(4 * c, half[1], half[2])]
    return group_shapes(half, levels - 1) + [(3 * c, half[1], half[2])]


def parse_params(packed: bytes, shape, version: int) -> dict:
    raw = zlib.decompress(packed)
    sizes = None
    if version >= 4:
        levels, fine, coarse, step_q, flags, transform = struct.unpack_from(">BBBHBB", raw)
        at = 7
        sizes = [g[0] for g in group_shapes(shape, levels)]
        count = sum(sizes)
        empty = [bool(raw[at + i // 8] & (0x80 >> (i % 8))) for i in range(count)]
        at += (count + 7) // 8
        ranges = [struct.unpack_from(">hh", raw, at + 4 * g) for g in range(len(sizes))]
        at += 4 * len(sizes)
        means = [struct.unpack_from(">h", raw, at + 2 * i)[0] for i in range(count)]
        at += 2 * count
        plane_ranges = [r for r, size in zip(ranges, sizes) for _ in range(size)]
        decays = []
        for i in range(count):
            decays.append(None if empty[i] else (raw[at], raw[at + 1]))
            at += 0 if empty[i] else 2
    else:
        head = ">BBBHB" if version >= 3 else ">BBBH"
        values = struct.unpack_from(head, raw)
        levels, fine, coarse, step_q = values[:4]
        flags = values[4] if version >= 3 else 0
        transform, at = 0, struct.calcsize(head)
        sizes = [g[0] for g in group_shapes(shape, levels)]
        count = sum(sizes)
        empty, means, plane_ranges, decays = [False] * count, [], [], []
        for i in range(count):
            mean, rmin, rmax, base, slope = struct.unpack_from(">hhhBB", raw, at)
            at += 8
            means.append(mean)
            plane_ranges.append((rmin, rmax))
            decays.append((base, slope))
    weights = []
    for size in sizes:
        for p in range(size):
            if empty[len(weights)]:
                weights.append(None)
                continue
            n = 6 + min(p, 3)
            weights.append(list(struct.unpack_from(f">{n}b", raw, at)))
            at += n
    gains = [128] * count
    if flags & 1:
        for i in range(count):
            if not empty[i]:
                gains[i] = raw[at]
                at += 1
    assert at == len(raw), "parameters longer than their fields"
    return {"levels": levels, "fine": fine, "coarse": coarse, "step_q": step_q, "transform": transform, "empty": empty, "means": means,
            "ranges": plane_ranges, "decays": decays, "weights": weights, "gains": gains, "sizes": sizes}


# -- sections 5.4 and 5.5: coding order and context model -----------------------------------------------------------
def block_offsets(n: int, block: int | None):
    parts = 1 if block is None else max(1, -(-n // block))
    base, extra = n // parts, n % parts
    out = []
    for b in range(parts):
        size = base + (1 if b < extra else 0)
        out += [(i, size) for i in range(size)]
    return out


def decode_group(reader, prm, first, gshape, version) -> list[list[int]]:
    size, gh, gw = gshape
    block = 64 if version >= 4 else None
    rows, cols = block_offsets(gh, block), block_offsets(gw, block)
    S = [[0] * (gh * gw) for _ in range(size)]
    R = [[0] * (gh * gw) for _ in range(size)]
    coded = [p for p in range(size) if not prm["empty"][first + p]]
    cells = []
    for pos in range(gh * gw):
        y, x = divmod(pos, gw)
        (ly, _), (lx, bw) = rows[y], cols[x]
        cells.append((ly, lx, bw, y, x))
    front = [c[1] + 2 * c[0] for c in cells]
    if version >= 4:
        order = sorted(((front[pos] + p, p, pos) for p in coded for pos in range(gh * gw)))
        order = [(p, pos) for _, p, pos in order]
    else:
        order = [(p, pos) for f in sorted(set(front)) for p in range(size) for pos in range(gh * gw) if front[pos] == f]
    tables = {}
    for p, pos in order:
        ly, lx, bw, y, x = cells[pos]
        plane = S[p]

        def at(dy, dx):
            return plane[(y + dy) * gw + x + dx]

        north = at(-1, 0) if ly >= 1 else 0
        nw = at(-1, -1) if ly >= 1 and lx >= 1 else north
        ne = at(-1, 1) if ly >= 1 and lx + 1 < bw else north
        nn = at(-2, 0) if ly >= 2 else north
        west = at(0, -1) if lx >= 1 else north
        ww = at(0, -2) if lx >= 2 else west
        feats = [north, nw, ne, nn, west, ww] + [S[p - k][pos] for k in range(min(p, 3), 0, -1)]
        acc = sum(w * f for w, f in zip(prm["weights"][first + p], feats))
        centre = min(max((acc * 8 + 16) // 32, -32767 * 8), 32767 * 8)
        below, fraction = centre // 8, centre % 8
        rn = R[p][pos - gw] if ly >= 1 else 0
        rw = R[p][pos - 1] if lx >= 1 else 0
        act = abs(north - nw) + abs(ne - north) + abs(north - nn) + abs(west - nw) + 2 * (abs(rn) + abs(rw))
        if p >= 1:
            act += 2 * abs(R[p - 1][pos])
        bin_ = sum(1 for t in THRESHOLDS if t <= act)
        base, slope = prm["decays"][first + p]
        q = min(max(base + slope * bin_, 0), 255)
        rmin, rmax = prm["ranges"][first + p]
        key = (q, fraction, rmin, rmax)
        if key not in tables:
            tables[key] = probabilities(q, rmin, rmax, fraction)
        r = reader.decode(tables[key]) + rmin
        S[p][pos] = min(max(below + r, -32767), 32767)
        R[p][pos] = r
    return S


# -- sections 5.3, 5.7 and 5.1: reconstruction ----------------------------------------------------------------------
def haar_inverse(planes: np.ndarray, shape) -> np.ndarray:
    c, h, w = shape
    ll, lh, hl, hh = np.split(planes, 4)
    out = np.empty((c, 2 * ll.shape[1], 2 * ll.shape[2]))
    out[:, 0::2, 0::2] = (((ll + lh) + hl) + hh) / 2
    out[:, 0::2, 1::2] = (((ll - lh) + hl) - hh) / 2
    out[:, 1::2, 0::2] = (((ll + lh) - hl) - hh) / 2
    out[:, 1::2, 1::2] = (((ll - lh) - hl) + hh) / 2
    return out[:, :h, :w]


def plane_steps(prm, channels):
    step, fine, coarse = prm["step_q"] / 1024, prm["fine"] / 16, prm["coarse"] / 16
    if prm["levels"] == 0:
        return [[step] * channels]
    if prm["levels"] == 1:
        return [[step] * channels + [step * fine] * (3 * channels)]
    return [[step] * channels + [step * coarse] * (3 * channels), [step * fine] * (3 * channels)]


def recompose(groups, shape, levels):
    if levels == 0:
        return groups[0]
    if levels == 1:
        return haar_inverse(groups[0], shape)
    c, h, w = shape
    approximation = recompose(groups[:-1], (c, (h + 1) // 2, (w + 1) // 2), levels - 1)
    return haar_inverse(np.concatenate([approximation, groups[-1]]), shape)


def channel_inverse(coded: np.ndarray, transform: int, basis=None, weights=None) -> np.ndarray:
    unit = TRANSFORM_UNITS[transform]
    if transform == 5:
        if weights is None or len(weights) != coded.shape[0]:
            raise SpecError("transform 5 needs its component weights")
        coded = np.stack([coded[k] / (weights[k] / 4096) for k in range(coded.shape[0])])
    if transform in (2, 3, 4, 5):
        n = len(basis)
        if coded.shape[0] != n:
            raise SpecError(f"transform {transform} needs {n} channels")
        out = np.zeros_like(coded)
        for k in range(n):
            column = np.array([basis[k][c] / 16384 for c in range(n)])
            out = out + column[:, None, None] * coded[k]
        coded = out
    return coded / unit


def decode_entropy(params: bytes, payload: bytes, shape, version: int, bases: dict, weights: dict | None = None) -> np.ndarray:
    prm = parse_params(params, shape, version)
    if version >= 4 and version < TRANSFORM_SINCE.get(prm["transform"], 4):  # versions 2-3: no transform byte (identity)
        raise SpecError(f"transform {prm['transform']} in version {version}")
    reader = RangeDecoder(payload)
    groups, first = [], 0
    for gshape, steps in zip(group_shapes(shape, prm["levels"]), plane_steps(prm, shape[0])):
        S = decode_group(reader, prm, first, gshape, version)
        size, gh, gw = gshape
        planes = np.empty(gshape)
        for p in range(size):
            scaled_step = steps[p] * (prm["gains"][first + p] / 128)
            planes[p] = prm["means"][first + p] / 64 + np.array(S[p], dtype=np.float64).reshape(gh, gw) * scaled_step
        groups.append(planes)
        first += size
    if not reader.exhausted():
        raise SpecError("payload not exhausted")
    coded = recompose(groups, shape, prm["levels"])
    return channel_inverse(coded, prm["transform"], bases.get(prm["transform"]), (weights or {}).get(prm["transform"])).astype(np.float32)


def decode(data: bytes, bases: dict, weights: dict | None = None) -> np.ndarray:
    """Raw latents (C, h, w) float32 of a stream; bases: transform id -> its NxN integer basis, weights: transform id
    -> its component weights (docs/format.md 5.1)."""
    c = read_container(data)
    if c["method"] == 1:
        return decode_palette(c["params"], c["payload"], c["shape"])
    if c["method"] == 2 and c["version"] >= 2:
        return decode_entropy(c["params"], c["payload"], c["shape"], c["version"], bases, weights)
    raise SpecError(f"method {c['method']} in version {c['version']}")


def latent_values(data: bytes) -> int:
    channels, h, w = read_container(data)["shape"]
    return channels * h * w


__all__ = ["decode", "latent_values", "SpecError", "math"]
