"""The entropy encoder's analysis for one base step: quantized symbols, contexts, predictor weights,
decay choices and the estimated stream size (pure numpy). The range coder turns a Plan into bytes."""

from __future__ import annotations

import numpy as np

from ...errors import OptionError
from . import context
from .params import MEAN_SCALE, RECONSTRUCTION_GAIN_ONE, Params, PlaneHeader
from .probability import MAX_ALPHABET, MAX_TOTAL_ALPHABET, choose_decay
from .transform import DEFAULT_BAND_GAINS, DEFAULT_LEVELS, GAIN_SCALE, LEVELS, STEP_SCALE, decompose, group_steps

STEP_Q_MAX = 65535


class Plan:
    """Everything the encoder decides for one base step; estimated_bytes() predicts params + payload."""

    def __init__(self, latents: np.ndarray, step_q: int, gains_q: tuple[int, int], levels: int, reconstruction_gains: bool = False):
        self.shape = latents.shape
        self.with_reconstruction_gains = reconstruction_gains
        self.reconstruction_gains_q: list[int] = []
        self.levels, self.step_q, self.gains_q = levels, int(step_q), tuple(int(g) for g in gains_q)
        groups = decompose(latents.astype(np.float64), levels)
        steps = group_steps(self.step_q, self.gains_q, levels, latents.shape[0])
        self.means_q, self.symbols, self.residuals, self.fractions, self.bins, self.weights = [], [], [], [], [], []
        for group, group_step in zip(groups, steps):
            means_q = np.clip(np.rint(group.reshape(len(group), -1).mean(axis=1) * MEAN_SCALE), -32768, 32767).astype(np.int64)
            scaled = (group - (means_q / MEAN_SCALE)[:, None, None]) / group_step[:, None, None]
            symbols = np.clip(np.rint(scaled), -context.SYMBOL_LIMIT, context.SYMBOL_LIMIT).astype(np.int64)
            # the encoder knows every symbol, so it evaluates the (causal) contexts for whole planes at once
            layout = context.layout(*symbols.shape[1:])
            positions = np.arange(layout.zero)
            flat = layout.empty(len(group))
            flat[:, : layout.zero] = symbols.reshape(len(group), -1)
            residuals, fractions, bins = layout.empty(len(group)), layout.empty(len(group)), layout.empty(len(group))
            all_feats = []
            for p in range(len(group)):
                feats = context.features(flat, p, layout, positions)
                weights = context.fit_weights(feats, flat[p, : layout.zero])
                below, fractions[p, : layout.zero] = context.predict(feats, weights)
                residuals[p, : layout.zero] = flat[p, : layout.zero] - below
                self.weights.append(weights)
                all_feats.append(feats)
            for p, feats in enumerate(all_feats):
                bins[p, : layout.zero] = context.activity_bins(feats, residuals, p, layout, positions)
            self.means_q += list(means_q)
            self.reconstruction_gains_q += _least_squares_gains(symbols * group_step[:, None, None], group - (means_q / MEAN_SCALE)[:, None, None])
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
            for i, g, p in self.planes():
                base, slope, bits = choose_decay(self.residuals[g][p][:-1], self.fractions[g][p][:-1], self.bins[g][p][:-1],
                                                 int(self.rmin[i]), int(self.rmax[i]))
                self.decay[i] = (base, slope)
                self.bits += bits

    def planes(self):
        """(index over all planes, group index, index within the group) in coding order."""
        index = 0
        for g, group in enumerate(self.symbols):
            for p in range(len(group)):
                yield index, g, p
                index += 1

    @property
    def alphabet_ok(self) -> bool:
        alphabets = self.rmax - self.rmin + 1
        return bool(np.all(alphabets <= MAX_ALPHABET) and alphabets.sum() <= MAX_TOTAL_ALPHABET)

    def params(self, reconstruction_gains: bool | None = None) -> Params:
        """The stream's parameters; reconstruction_gains (default: as the plan was made) adds each plane's
        least-squares gain, which the payload does not depend on."""
        headers = [PlaneHeader(int(self.means_q[i]), int(self.rmin[i]), int(self.rmax[i]), int(self.decay[i, 0]), int(self.decay[i, 1]))
                   for i, _, _ in self.planes()]
        with_gains = self.with_reconstruction_gains if reconstruction_gains is None else reconstruction_gains
        return Params(self.levels, self.gains_q, self.step_q, headers, self.weights,
                      tuple(self.reconstruction_gains_q) if with_gains else None)

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


def plan_for_step(latents: np.ndarray, step: float, *, band_gains: tuple[float, float] = DEFAULT_BAND_GAINS,
                  levels: int = DEFAULT_LEVELS, reconstruction_gains: bool = False) -> Plan:
    if levels not in LEVELS:
        raise OptionError(f"levels must be one of {LEVELS}, got {levels!r}")
    gains_q = tuple(int(np.clip(round(g * GAIN_SCALE), 1, 255)) for g in band_gains)
    step_q = int(np.clip(round(step * STEP_SCALE), 1, STEP_Q_MAX))
    plan = Plan(latents, step_q, gains_q, levels, reconstruction_gains)
    while not plan.alphabet_ok and step_q < STEP_Q_MAX:  # extreme latents or a tiny step: coarsen until it fits
        step_q = min(STEP_Q_MAX, step_q * 2)
        plan = Plan(latents, step_q, gains_q, levels, reconstruction_gains)
    if not plan.alphabet_ok:
        raise OptionError("latents are too large to code (residual alphabet exceeds its limit at the coarsest step)")
    return plan
