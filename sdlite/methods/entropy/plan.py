"""The entropy encoder's analysis for one base step: quantized symbols, contexts, predictor weights,
decay choices and the estimated stream size (pure numpy). The range coder turns a Plan into bytes."""

from __future__ import annotations

import numpy as np

from ...errors import OptionError
from . import context
from .params import MAX_DECODE_WORK, MEAN_SCALE, RECONSTRUCTION_GAIN_ONE, Params, PlaneHeader
from .probability import MAX_ALPHABET, MAX_RESIDUAL, choose_decays
from .transform import DEFAULT_BAND_GAINS, DEFAULT_LEVELS, GAIN_SCALE, LEVELS, STEP_SCALE, decompose, group_steps

STEP_Q_MAX = 65535


class Plan:
    """Everything the encoder decides for one base step; estimated_bytes() predicts params + payload.

    coded: the values to code (C, h, w), already in coding units (channels.ChannelTransform.forward);
    transform_id names that transform in the stream."""

    def __init__(self, coded: np.ndarray, step_q: int, gains_q: tuple[int, int], levels: int, reconstruction_gains: bool = False,
                 transform_id: int = 0):
        self.shape = coded.shape
        self.transform_id = transform_id
        self.with_reconstruction_gains = reconstruction_gains
        self.reconstruction_gains_q: list[int] = []
        self.levels, self.step_q, self.gains_q = levels, int(step_q), tuple(int(g) for g in gains_q)
        groups = decompose(coded.astype(np.float64), levels)
        steps = group_steps(self.step_q, self.gains_q, levels, coded.shape[0])
        self.means_q, self.symbols, self.residuals, self.fractions, self.bins, self.weights, self.empty = [], [], [], [], [], [], []
        self.layouts, self.ranges = [], []
        for group, group_step in zip(groups, steps):
            means_q = np.clip(np.rint(group.reshape(len(group), -1).mean(axis=1) * MEAN_SCALE), -32768, 32767).astype(np.int64)
            scaled = (group - (means_q / MEAN_SCALE)[:, None, None]) / group_step[:, None, None]
            symbols = np.clip(np.rint(scaled), -context.SYMBOL_LIMIT, context.SYMBOL_LIMIT).astype(np.int64)
            empty = ~symbols.reshape(len(group), -1).any(axis=1)
            # the encoder knows every symbol, so it evaluates the (causal) contexts for whole planes at once
            layout = context.layout(*symbols.shape[1:], context.BLOCK_SIDE)
            flat = layout.empty(len(group))
            flat[:, : layout.zero] = symbols.reshape(len(group), -1)
            residuals, fractions, bins = layout.empty(len(group)), layout.empty(len(group)), layout.empty(len(group))
            # planes with nothing coded keep zeros: the decoder holds zeros for their symbols and residuals
            coded_planes = np.flatnonzero(~empty)
            by_plane = context.plane_features(flat, coded_planes, layout)  # (CROSS_COLUMNS, coded planes, positions)
            weights = [None] * len(group)
            for p, w in zip(coded_planes, context.fit_planes_weights(by_plane, flat[coded_planes, : layout.zero], coded_planes)):
                weights[p] = w
            self.weights += weights
            if len(coded_planes):
                padded = context.padded_weights(weights, len(group))[coded_planes]
                below, fractions[coded_planes, : layout.zero] = context.planes_predict(by_plane, padded)
                residuals[coded_planes, : layout.zero] = flat[coded_planes, : layout.zero] - below
                bins[coded_planes, : layout.zero] = context.plane_activity_bins(by_plane, residuals, coded_planes, layout)
            coded_residuals = residuals[~empty, : layout.zero]
            rmin = int(coded_residuals.min()) if coded_residuals.size else 0
            rmax = max(int(coded_residuals.max()) if coded_residuals.size else 1, rmin + 1)  # constriction needs two symbols
            self.ranges.append((rmin, rmax))
            self.means_q += list(means_q)
            self.reconstruction_gains_q += _least_squares_gains(symbols * group_step[:, None, None], group - (means_q / MEAN_SCALE)[:, None, None])
            self.empty += list(empty)
            self.layouts.append(layout)
            self.symbols.append(symbols)
            self.residuals.append(residuals)
            self.fractions.append(fractions)
            self.bins.append(bins)
        self.decay = np.zeros((len(self.means_q), 2), dtype=np.int64)
        self.bits = 0.0
        if self.alphabet_ok:
            first = 0
            for g, (residuals, fractions, bins) in enumerate(zip(self.residuals, self.fractions, self.bins)):
                coded = [p for p in range(len(residuals)) if not self.empty[first + p]]
                if coded:
                    for p, (base, slope, bits) in zip(coded, choose_decays(residuals[coded, :-1], fractions[coded, :-1], bins[coded, :-1],
                                                                           *self.ranges[g])):
                        self.decay[first + p] = (base, slope)
                        self.bits += bits
                first += len(residuals)

    def planes(self):
        """(index over all planes, group index, index within the group) in coding order."""
        index = 0
        for g, group in enumerate(self.symbols):
            for p in range(len(group)):
                yield index, g, p
                index += 1

    def decode_work(self) -> int:
        """Coded symbols times the residual alphabet, summed over groups (params.MAX_DECODE_WORK bounds it)."""
        work, first = 0, 0
        for symbols, (rmin, rmax) in zip(self.symbols, self.ranges):
            coded = len(symbols) - sum(self.empty[first:first + len(symbols)])
            work += coded * symbols.shape[1] * symbols.shape[2] * (rmax - rmin + 1)
            first += len(symbols)
        return work

    def overshoot(self) -> float:
        """How far the residuals exceed the decoder's bounds (alphabet, residual size, decoding work):
        1.0 or less when they fit; about the factor the step must grow by otherwise."""
        ratios = [self.decode_work() / MAX_DECODE_WORK]
        for rmin, rmax in self.ranges:
            ratios += [(rmax - rmin + 1) / MAX_ALPHABET, -rmin / MAX_RESIDUAL, rmax / MAX_RESIDUAL]
        return max(ratios)

    @property
    def alphabet_ok(self) -> bool:
        return self.overshoot() <= 1.0

    def params(self, reconstruction_gains: bool | None = None) -> Params:
        """The stream's parameters; reconstruction_gains (default: as the plan was made) adds each plane's
        least-squares gain, which the payload does not depend on."""
        headers = [PlaneHeader(int(self.means_q[i]), *self.ranges[g], int(self.decay[i, 0]), int(self.decay[i, 1]), bool(self.empty[i]))
                   for i, g, _ in self.planes()]
        with_gains = self.with_reconstruction_gains if reconstruction_gains is None else reconstruction_gains
        return Params(self.levels, self.gains_q, self.step_q, headers, self.weights,
                      tuple(self.reconstruction_gains_q) if with_gains else None, self.transform_id)

    def estimated_bytes(self) -> int:
        """Parameters plus payload (range coder words of 4 bytes)."""
        return len(self.params().pack()) + 4 * (int(self.bits) // 32 + 2)


def _least_squares_gains(reconstructed: np.ndarray, target: np.ndarray) -> list[int]:
    """Per plane, the gain g minimising |target - g * reconstructed|^2, as a byte in 1/128 units (1..255).
    Quantization to bin centres overstates a plane's energy; a generative decoder shows that as blotches."""
    flat_r = reconstructed.reshape(len(reconstructed), -1)
    flat_t = target.reshape(len(target), -1)
    energy = np.einsum("pn,pn->p", flat_r, flat_r)
    cross = np.einsum("pn,pn->p", flat_r, flat_t)
    gains = np.where(energy > 0, cross / np.maximum(energy, 1e-12), 1.0)
    return [int(g) for g in np.clip(np.rint(gains * RECONSTRUCTION_GAIN_ONE), 1, 255)]


def plan_for_step(coded: np.ndarray, step: float, *, band_gains: tuple[float, float] = DEFAULT_BAND_GAINS,
                  levels: int = DEFAULT_LEVELS, reconstruction_gains: bool = False, transform_id: int = 0) -> Plan:
    """The plan for a base step (coding units); coarser when the residuals would exceed the decoder's
    bounds (alphabet, residual size, decoding work)."""
    if levels not in LEVELS:
        raise OptionError(f"levels must be one of {LEVELS}, got {levels!r}")
    gains_q = tuple(int(np.clip(round(g * GAIN_SCALE), 1, 255)) for g in band_gains)
    step_q = int(np.clip(round(step * STEP_SCALE), 1, STEP_Q_MAX))
    plan = Plan(coded, step_q, gains_q, levels, reconstruction_gains, transform_id)
    while not plan.alphabet_ok and step_q < STEP_Q_MAX:  # extreme latents or a tiny step: coarsen until it fits
        growth = min(2.0, max(1.05, 1.02 * plan.overshoot()))  # residuals shrink about in proportion to the step
        step_q = min(STEP_Q_MAX, max(step_q + 1, int(step_q * growth)))
        plan = Plan(coded, step_q, gains_q, levels, reconstruction_gains, transform_id)
    if not plan.alphabet_ok:
        raise OptionError("latents are too large to code (residual alphabet exceeds its limit at the coarsest step)")
    return plan
