"""The entropy method's range coding (constriction): a Plan's residuals to payload bytes, and payload
bytes back to latents, front by front (see context.py for the order)."""

from __future__ import annotations

import numpy as np

from ...errors import BitstreamError
from . import context
from .params import MEAN_SCALE, Params
from .plan import Plan
from .probability import decay_bytes, residual_tables
from .transform import group_shapes, group_steps, recompose


def _tables(params: Params) -> list[np.ndarray]:
    return [residual_tables(decay_bytes(p.decay_base, p.decay_slope), p.rmin, p.rmax) for p in params.planes]


def encode_payload(plan: Plan) -> bytes:
    import constriction

    family = constriction.stream.model.Categorical(perfect=False)
    encoder = constriction.stream.queue.RangeEncoder()
    tables = _tables(plan.params())
    first = 0
    for symbols, residuals, fractions, bins in zip(plan.symbols, plan.residuals, plan.fractions, plan.bins):
        for front in context.layout(*symbols.shape[1:]).fronts:
            for p in range(len(residuals)):
                coded = (residuals[p, front] - plan.rmin[first + p]).astype(np.int32)
                encoder.encode(coded, family, tables[first + p][bins[p, front], fractions[p, front]])
        first += len(residuals)
    return encoder.get_compressed().astype("<u4").tobytes()


def decode_latents(params: Params, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    import constriction

    if len(payload) % 4:
        raise BitstreamError("entropy payload length is not a multiple of 4")
    decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
    family = constriction.stream.model.Categorical(perfect=False)
    tables = _tables(params)
    groups = []
    first = 0
    for group_shape, group_step in zip(group_shapes(shape, params.levels), group_steps(params.step_q, params.gains_q, params.levels, shape[0])):
        layout = context.layout(*group_shape[1:])
        symbols, residuals = layout.empty(group_shape[0]), layout.empty(group_shape[0])
        for front in layout.fronts:
            for p in range(group_shape[0]):
                feats = context.features(symbols, p, layout, front)
                below, fraction = context.predict(feats, params.weights[first + p])
                bins = context.activity_bins(feats, residuals, p, layout, front)
                try:
                    coded = decoder.decode(family, tables[first + p][bins, fraction])
                except Exception as exc:  # constriction reports malformed data with its own exceptions
                    raise BitstreamError(f"corrupt entropy payload: {exc}") from None
                residuals[p, front] = coded.astype(np.int64) + params.planes[first + p].rmin
                symbols[p, front] = np.clip(below + residuals[p, front], -context.SYMBOL_LIMIT, context.SYMBOL_LIMIT)
        means = np.array([params.planes[first + p].mean_q for p in range(group_shape[0])], dtype=np.float64)[:, None, None] / MEAN_SCALE
        gains = np.array([params.gain_of(first + p) for p in range(group_shape[0])])
        groups.append(means + symbols[:, :-1].reshape(group_shape) * (group_step * gains)[:, None, None])
        first += group_shape[0]
    return recompose(groups, shape, params.levels).astype(np.float32)
