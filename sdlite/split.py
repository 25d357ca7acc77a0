"""Networks with whole-map statistics, split so that tiling them stays the same computation.

A GroupNorm (TAEF2's "pool" branch) normalises over the whole feature map, so running a network by
tiles changes what it computes: measured on Kodak images at 1536x1024, TAEF2's decoder by 96-cell tiles
differed from its whole-image decode by 28-39 dB PSNR, where TAESD3 (no such layer) differs by 58-60 dB
(BENCHMARKS.md). TAEF2 keeps those layers at the latent resolution (the encoder's last stage, the
decoder's first), so each network splits into a part with the norms, cheap enough to run whole at 1/8
of the image's side, and a part of convolutions only, which tiles as every other TAE does:

- decoder: head = latents to the input of the first upsampling (norms; run whole), tail = the rest (tiled);
- encoder: head = pixels to the output of the last stride-2 convolution (tiled), tail = the rest (norms; whole).

The split is read from the ONNX graph itself (sdlite's builder and torch exports both work), checked (the
tiled part must hold no normalisation), and None when a graph has no such layer or cannot be split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

NORM_OPS = ("InstanceNormalization", "GroupNormalization", "LayerNormalization")
UPSAMPLING_OPS = ("Resize", "Upsample")


@dataclass(frozen=True)
class Split:
    head: bytes  # serialized ONNX: the network's input -> boundary
    tail: bytes  # boundary -> the network's output
    boundary: str  # the tensor between them
    tiled: str  # "head" (an encoder) or "tail" (a decoder)


def _strided(node) -> bool:
    return node.op_type == "Conv" and any(a.name == "strides" and max(a.ints, default=1) > 1 for a in node.attribute)


def split_for_tiles(path: Path, component: str) -> Split | None:
    """The split of a vae_encoder or vae_decoder graph with normalisation layers, or None (no such layer,
    or none of the shapes described above)."""
    import onnx
    from onnx.utils import Extractor

    model = onnx.load(str(path))
    nodes = list(model.graph.node)
    norms = [i for i, node in enumerate(nodes) if node.op_type in NORM_OPS]
    if not norms:
        return None
    if component == "vae_decoder":
        ups = [i for i, node in enumerate(nodes) if node.op_type in UPSAMPLING_OPS]
        if not ups or max(norms) > ups[0]:
            return None
        boundary, tiled = nodes[ups[0]].input[0], "tail"
    else:
        strided = [i for i, node in enumerate(nodes[: min(norms)]) if _strided(node)]
        if not strided:
            return None
        boundary, tiled = nodes[strided[-1]].output[0], "head"
    source, target = model.graph.input[0].name, model.graph.output[0].name
    try:
        model = onnx.shape_inference.infer_shapes(model)
        if boundary not in {v.name for v in model.graph.value_info}:  # shape inference may leave it out: rank 4, float
            model.graph.value_info.append(onnx.helper.make_tensor_value_info(boundary, onnx.TensorProto.FLOAT, [None] * 4))
        extractor = Extractor(model)
        head = extractor.extract_model([source], [boundary])
        tail = extractor.extract_model([boundary], [target])
    except Exception:  # onnx raises several types for a graph it cannot cut there
        return None
    tiled_part = head if tiled == "head" else tail
    if any(node.op_type in NORM_OPS for node in tiled_part.graph.node):
        return None
    return Split(head.SerializeToString(), tail.SerializeToString(), boundary, tiled)
