"""Mixed int8: how much int8 hurts each node of a network, and the fewest nodes kept float to stay in a budget.

The rule (export.quantize's default for the VAE encoder and decoder), on the calibration crops:
1. baseline: the fp32 round trip's own pixel error (mean squared, pixels in [-1, 1]);
2. the first network: every node int8 but `always_float` (the edge convolutions): when the error it adds
   to the round trip (against the crops, as PSNR sees it) is at most `budget` x baseline, it is the choice
   (nothing else is measured);
3. otherwise sensitivity: each node the quantizer changes (int8_nodes) int8 alone, everything else float,
   its added error; then every node int8 except always_float and the k most sensitive, k the smallest
   within the budget (a binary search over k: the added error falls as k grows);
4. k at most MAX_FLOAT_SHARE of the nodes: when even that misses the budget, the Choice says so
   (within_budget False) and the caller keeps the whole network float, since int8 cannot keep its quality
   at a speed worth having.
Why the edges first: on TAESD (Kodak, Intel Xeon AMX) int8 with its first and last convolutions float lost
0.07 dB at 2.7x the fp32 round trip's speed, while the 13 most sensitive nodes float lost as much at 1.35x:
a float residual Add splits the int8 kernels around it.
The budget is relative to the model's own error, so one number serves a blurry decoder and a sharp one. The caller supplies how to quantize and
how to measure, so this module knows nothing of onnxruntime.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger("export")

# Added pixel MSE allowed, as a share of the fp32 round trip's MSE on the calibration crops. Photos
# smoother than the ones the codec will see make int8 look costlier: on the 256-pixel wallpaper and
# scikit-image crops used here, int8 with float edges added 10.9 % to TAESD's decoder error and 65 % to
# TAESD3's, but on Kodak 1.6 % (0.07 dB) and 15 % (0.60 dB). 0.15 keeps the first and refuses the second.
# It does not hold everywhere: VAElight's crops estimate its int8 cost about right (9 %), and the budget lets
# its -0.34 dB through (BENCHMARKS.md).
FLOAT_BUDGET = 0.15
# Past a fifth of the nodes float, int8 buys little speed (measured, Intel Xeon AMX, 768x512 decoders: TAESD
# with 19 of 52 nodes float 1.2x fp32; TAESD3 with 5 of 38 float 1.6x, 10 float 1.5x, 20 float 1.1x).
MAX_FLOAT_SHARE = 0.2


@dataclass(frozen=True)
class Choice:
    """What the rule measured and chose. Errors are mean squared pixel errors ([-1, 1] scale)."""

    float_nodes: tuple[str, ...]
    baseline_mse: float  # the fp32 round trip against the crops
    all_int8_mse: float  # added by quantizing every candidate but always_float
    mixed_mse: float  # added by the chosen network
    budget: float
    sensitivity: tuple[tuple[str, str, float], ...]  # (node, op type, added MSE alone), worst first
    within_budget: bool
    model: Path | None = None  # the chosen network as written by quantize (not in the manifest)

    def to_manifest(self) -> dict:
        return {"rule": "sensitivity", "budget": self.budget, "float_nodes": list(self.float_nodes),
                "baseline_mse": self.baseline_mse, "all_int8_added_mse": self.all_int8_mse,
                "mixed_added_mse": self.mixed_mse, "within_budget": self.within_budget,
                "measured_nodes": len(self.sensitivity)}


def int8_nodes(graph) -> list[tuple[str, str]]:
    """(name, op type) of the nodes of a quantized graph (an onnx GraphProto) that read dequantized int8
    data, in graph order: what the quantizer changed, whatever its registry covers in this onnxruntime
    (Conv, Add, Mul, Tanh, Resize ... in QDQ form)."""
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return [(node.name, node.op_type) for node in graph.node
            if node.op_type not in ("QuantizeLinear", "DequantizeLinear") and dequantized.intersection(node.input)]


def choose(quantize: Callable[[Path, list | None, list], None], added_error: Callable[[Path], float], baseline_mse: float,
           folder: Path, *, nodes_of: Callable[[Path], list[tuple[str, str]]], always_float: tuple[str, ...] = (),
           budget: float = FLOAT_BUDGET, max_share: float = MAX_FLOAT_SHARE, measure_nodes: bool = True,
           progress: Callable[[str], None] | None = None) -> Choice:
    """quantize(target, nodes_to_quantize or None for all, nodes_to_exclude) writes a model;
    added_error(path) measures what it adds to the network's error (may be below 0); nodes_of(path) lists a
    written model's int8 nodes (int8_nodes of its graph): read from the first model (int8 but always_float),
    they are the candidates, so no model is quantized only to be listed. Models are written under `folder`;
    the chosen one stays there (Choice.model: the caller installs it rather than quantizing it again), the
    others are removed. The Choice's float_nodes include always_float. measure_nodes False stops after the
    first try (a network too large for a pass per node): a miss is then within_budget False."""
    always_float = tuple(always_float)
    if budget <= 0:
        raise ValueError(f"budget must be > 0, got {budget}")
    kept: dict[int, Path] = {}  # float-k models, k nodes float besides always_float

    def measured(tag: str, only=None, exclude=(), keep: int | None = None) -> float:
        path = folder / f"{tag}.onnx"
        quantize(path, only, list(exclude))
        try:
            return added_error(path)
        finally:
            if keep is None:
                path.unlink(missing_ok=True)
            else:
                kept[keep] = path

    def chosen(k: int, *rest) -> Choice:
        for other, path in kept.items():
            if other != k:
                path.unlink(missing_ok=True)
        return Choice((*always_float, *ranked[:k]), baseline_mse, errors[0], errors[k], budget, *rest, model=kept[k])

    limit = budget * baseline_mse
    ranked: list[str] = []
    errors = {0: measured("float-0", exclude=always_float, keep=0)}
    candidates = [(name, op_type) for name, op_type in nodes_of(kept[0]) if name not in always_float]
    if progress:
        progress(f"int8 but {len(always_float)} edge nodes: added {errors[0]:.3g} (limit {limit:.3g}, baseline {baseline_mse:.3g})")
    if errors[0] <= limit or not measure_nodes or not candidates:
        return chosen(0, (), errors[0] <= limit)
    rows = []
    for i, (name, op_type) in enumerate(candidates):
        rows.append((name, op_type, measured(f"one-{i}", only=[name])))
        if progress:
            progress(f"sensitivity {i + 1}/{len(candidates)}: {name} ({op_type}) {rows[-1][2]:.3g}")
    rows.sort(key=lambda row: -row[2])
    ranked = [name for name, _, _ in rows]

    def error_with(k: int) -> float:
        if k not in errors:
            errors[k] = measured(f"float-{k}", exclude=[*always_float, *ranked[:k]], keep=k)
            if progress:
                progress(f"{k} float besides the edges: added {errors[k]:.3g} (limit {limit:.3g})")
        return errors[k]

    nodes = len(candidates) + len(always_float)
    most = max(0, int(nodes * max_share) - len(always_float))
    if error_with(most) > limit:
        k = most
        log.warning("int8 misses its budget even with %d of %d nodes float (added %.3g > %.3g)",
                    most + len(always_float), nodes, errors[most], limit)
    else:
        low, high = 0, most  # error_with(low) > limit >= error_with(high)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if error_with(middle) > limit else (low, middle)
        k = high
    return chosen(k, tuple(rows), errors[k] <= limit)
