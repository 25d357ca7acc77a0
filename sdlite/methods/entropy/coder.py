"""The entropy method's range coding (constriction): a Plan's residuals to payload bytes, and payload
bytes back to latents (see context.py for the coding order).

Decoding cost is bounded by the stream's claims, not by its shape alone: from format version 4 a group
takes at most (fronts + planes - 1) coder steps, fronts <= 3 * context.BLOCK_SIDE, with the work of each
step proportional to its symbols times the residual alphabet (params.MAX_DECODE_WORK bounds the sum),
and tables built once per group. Streams of format versions 2 and 3, coded front by front and plane by
plane, are refused when they would need more sequential coder calls than their payload justifies.
A payload must hold what it codes: as soon as the decoded symbols' information exceeds the payload's
bits (a coder reading past its end, an empty payload), decoding stops with BitstreamError; and after the
last symbol, no more than one word may remain unread (constriction's decoder cannot tell one spare word
from its own look-ahead).
"""

from __future__ import annotations

import numpy as np

from ...errors import BitstreamError
from . import channels, context
from .params import MEAN_SCALE, Params
from .plan import Plan
from .probability import decay_bytes, residual_tables, tables_for_planes
from .transform import group_shapes, group_steps, recompose

CHUNK_ENTRIES = 1 << 21
"""Most table entries (symbols * alphabet) gathered for one coder call: bounds the memory of a call."""
LEGACY_FREE_CALLS = 12_500
LEGACY_CALLS_PER_BYTE = 4
"""Format versions 2 and 3 code front by front and plane by plane, one sequential coder call each (about
0.1 ms): a stream may need at most LEGACY_FREE_CALLS + LEGACY_CALLS_PER_BYTE * its payload bytes. Every
shape up to 2048x2048 with 4 channels (6,112 calls) or 1024x1024 with 16 (12,160) passes whatever its
size; 2048x2048 with 16 channels (24,448) needs a payload of 3.1 kB; a far-from-square shape inside
max_pixels (500,000 calls) is refused unless its payload is as large as that time."""
_SLACK_BITS = 64  # the range coder's own overhead, in the payload-length check
_MIN_PROBABILITY = 2.0**-24  # constriction never gives a symbol less than this


def max_payload(shape: tuple[int, int, int]) -> int:
    """The largest payload a stream of this latent shape can have: no symbol costs more than 24 bits
    (constriction's smallest probability), plus the coder's last words."""
    channels, height, width = shape
    values = channels * (height + 3) * (width + 3)  # Haar bands pad odd sides at each level
    return 4 * ((24 * values) // 32 + 3)


def _group_tables(params: Params, first: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """One group's tables (unique decay bytes, FRACTIONS, alphabet) and, per plane and bin, the row of
    its decay byte in them."""
    rmin, rmax = params.planes[first].rmin, params.planes[first].rmax
    decays = np.stack([decay_bytes(p.decay_base, p.decay_slope) for p in params.planes[first:first + size]])  # (planes, bins)
    unique, index = np.unique(decays, return_inverse=True)
    return residual_tables(unique, rmin, rmax), index.reshape(decays.shape)


def _coded_planes(params_or_plan_empty: list, first: int, size: int) -> list[int]:
    return [p for p in range(size) if not params_or_plan_empty[first + p]]


def encode_payload(plan: Plan) -> bytes:
    import constriction

    family = constriction.stream.model.Categorical(perfect=False)
    encoder = constriction.stream.queue.RangeEncoder()
    params = plan.params()
    first = 0
    for g, (residuals, fractions, bins) in enumerate(zip(plan.residuals, plan.fractions, plan.bins)):
        size = len(residuals)
        coded = _coded_planes(plan.empty, first, size)
        if coded:
            tables, rows = _group_tables(params, first, size)
            plane_ids, positions, _ = context.schedule(plan.layouts[g], coded)
            rmin = plan.ranges[g][0]
            chunk = max(1, CHUNK_ENTRIES // tables.shape[-1])
            for start in range(0, len(plane_ids), chunk):  # the queue coder's bytes do not depend on how calls are cut
                pid, pos = plane_ids[start:start + chunk], positions[start:start + chunk]
                probabilities = tables[rows[pid, bins[pid, pos]], fractions[pid, pos]]
                encoder.encode((residuals[pid, pos] - rmin).astype(np.int32), family, probabilities)
        first += size
    return encoder.get_compressed().astype("<u4").tobytes()


def _reconstruct(params: Params, groups_symbols: list, shape: tuple[int, int, int]) -> np.ndarray:
    groups, first = [], 0
    for symbols, group_shape, group_step in zip(groups_symbols, group_shapes(shape, params.levels),
                                                group_steps(params.step_q, params.gains_q, params.levels, shape[0])):
        size = group_shape[0]
        means = np.array([params.planes[first + p].mean_q for p in range(size)], dtype=np.float64)[:, None, None] / MEAN_SCALE
        gains = np.array([params.gain_of(first + p) for p in range(size)])
        groups.append(means + symbols[:, :-1].reshape(group_shape) * (group_step * gains)[:, None, None])
        first += size
    coded = recompose(groups, shape, params.levels)
    return channels.by_id(params.transform).inverse(coded).astype(np.float32)


class _Reader:
    """The range decoder with the payload checks: words present, none left over, none read past the end."""

    def __init__(self, payload: bytes):
        import constriction

        if len(payload) % 4:
            raise BitstreamError("entropy payload length is not a multiple of 4")
        self.words = len(payload) // 4
        self.decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
        self.family = constriction.stream.model.Categorical(perfect=False)
        self.bits = 0.0
        self.symbols = 0

    def decode(self, probabilities: np.ndarray) -> np.ndarray:
        try:
            coded = self.decoder.decode(self.family, probabilities)
        except Exception as exc:  # constriction reports malformed data with its own exceptions
            raise BitstreamError(f"corrupt entropy payload: {exc}") from None
        chosen = probabilities[np.arange(len(coded)), coded]
        self.bits -= float(np.log2(np.maximum(chosen, _MIN_PROBABILITY)).sum())
        self.symbols += len(coded)
        if self.bits > 32 * self.words + _SLACK_BITS + 1e-3 * self.bits:  # at once: a short payload costs no more than its bits
            raise BitstreamError(f"corrupt entropy payload: its symbols need over {self.bits:.0f} bits, the payload holds {32 * self.words}")
        return coded.astype(np.int64)

    def finish(self) -> None:
        if not self.decoder.maybe_exhausted():
            raise BitstreamError("corrupt entropy payload: its length does not match the symbols it codes")


def decode_latents(params: Params, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    if params.version < 4:
        return _decode_legacy(params, payload, shape)
    reader = _Reader(payload)
    empty = [p.empty for p in params.planes]
    groups_symbols = []
    first = 0
    for group_shape in group_shapes(shape, params.levels):
        size = group_shape[0]
        layout = context.layout(*group_shape[1:], context.BLOCK_SIDE)
        symbols, residuals = layout.empty(size), layout.empty(size)
        coded = _coded_planes(empty, first, size)
        if coded:
            tables, rows = _group_tables(params, first, size)
            weights = context.padded_weights(params.weights[first:first + size], size)
            rmin = params.planes[first].rmin
            plane_ids, positions, bounds = context.schedule(layout, coded)
            chunk = max(1, CHUNK_ENTRIES // tables.shape[-1])
            symbols_flat, residuals_flat = symbols.ravel(), residuals.ravel()  # views: writes land in symbols, residuals
            for first_row, index, steps in context.index_rows(layout, plane_ids, positions, bounds):
                for step in steps:
                    for start in range(bounds[step], bounds[step + 1], chunk):  # rows of one step are independent
                        stop = min(start + chunk, bounds[step + 1])
                        here = slice(start - first_row, stop - first_row)
                        pid, own = plane_ids[start:stop], index.own[here]
                        feats = symbols_flat[index.features[:, here]]
                        below, fraction = context.row_predict(feats, weights[pid])
                        bins = context.flat_activity_bins(feats, residuals_flat, index, here)
                        decoded = reader.decode(tables[rows[pid, bins], fraction]) + rmin
                        residuals_flat[own] = decoded
                        symbols_flat[own] = np.clip(below + decoded, -context.SYMBOL_LIMIT, context.SYMBOL_LIMIT)
        groups_symbols.append(symbols)
        first += size
    reader.finish()
    return _reconstruct(params, groups_symbols, shape)


def _decode_legacy(params: Params, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    """Format versions 2 and 3: whole planes, front by front, plane by plane."""
    calls = sum(len(context.layout(*s[1:]).fronts) * s[0] for s in group_shapes(shape, params.levels))
    allowed = LEGACY_FREE_CALLS + LEGACY_CALLS_PER_BYTE * len(payload)
    if calls > allowed:
        raise BitstreamError(
            f"this format version {params.version} stream of latent shape {shape} needs {calls} sequential coder calls, over the "
            f"{allowed} its {len(payload)} payload bytes justify (format version 4 codes such shapes in blocks)"
        )
    reader = _Reader(payload)
    tables = tables_for_planes([decay_bytes(p.decay_base, p.decay_slope) for p in params.planes], [(p.rmin, p.rmax) for p in params.planes])
    groups_symbols = []
    first = 0
    for group_shape in group_shapes(shape, params.levels):
        layout = context.layout(*group_shape[1:])
        symbols, residuals = layout.empty(group_shape[0]), layout.empty(group_shape[0])
        for front in layout.fronts:
            for p in range(group_shape[0]):
                feats = context.features(symbols, p, layout, front)
                below, fraction = context.predict(feats, params.weights[first + p])
                bins = context.activity_bins(feats, residuals, p, layout, front)
                residuals[p, front] = reader.decode(tables[first + p][bins, fraction]) + params.planes[first + p].rmin
                symbols[p, front] = np.clip(below + residuals[p, front], -context.SYMBOL_LIMIT, context.SYMBOL_LIMIT)
        groups_symbols.append(symbols)
        first += group_shape[0]
    reader.finish()
    return _reconstruct(params, groups_symbols, shape)
