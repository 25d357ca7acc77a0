"""Method "palette" (id 1), the seed's: 8-bit latents, a 256-entry palette with dithering, deflate.

Raw latent mean -> q = round(z / 0.18215 + 127.5) clipped to 0..255 (quantize.py) -> a palette of at
most 256 four-channel entries (median cut + k-means) with 4-D Floyd-Steinberg error diffusion
(colours.py) -> entry count, palette and indices deflated at zlib level 9. Fixed rate, about 0.14 bpp.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np

from ...deflate import inflate_bounded
from ...errors import BitstreamError, OptionError
from ..base import Encoded, Method, float_option
from . import colours
from .quantize import SEED_OFFSET, SEED_STEP, dequantize, quantize

METHOD_ID = 1
ZLIB_LEVEL = 9
DEFAULT_DITHER = 1.0  # the seed's libimagequant setting
MAX_CHANNELS = 255  # the entry count and palette rows are bytes
_MICRO = 1_000_000  # the step is stored in millionths of a raw latent unit
_PARAMS = struct.Struct(">IHB")  # step (micro-units), offset * 2, dither strength (percent)


def _deflate_bound(size: int) -> int:
    """zlib's worst case for `size` bytes (deflateBound, rounded up)."""
    return size + size // 1000 + 64


def encode(latents: np.ndarray, *, dither: float = DEFAULT_DITHER) -> Encoded:
    channels = latents.shape[0]
    if channels > MAX_CHANNELS:
        raise OptionError(f"the palette method supports at most {MAX_CHANNELS} latent channels, got {channels}")
    quantized = quantize(latents)
    pixels = np.ascontiguousarray(quantized.codes.transpose(1, 2, 0))  # (h, w, C)
    palette = colours.build_palette(pixels.reshape(-1, channels))
    indices = colours.dither(pixels, palette, dither)
    raw = bytes([len(palette) - 1]) + palette.tobytes() + indices.tobytes()
    params = _PARAMS.pack(round(SEED_STEP * _MICRO), round(SEED_OFFSET * 2), round(dither * 100))
    return Encoded(params, zlib.compress(raw, ZLIB_LEVEL), {"clipped": quantized.clipped, "palette_size": len(palette)})


def decode(params: bytes, payload: bytes, shape: tuple[int, int, int], version: int) -> np.ndarray:
    if len(params) != _PARAMS.size:
        raise BitstreamError("palette method parameters have the wrong length")
    step_micro, offset2, _ = _PARAMS.unpack(params)
    if step_micro == 0:
        raise BitstreamError("palette quantization step is zero")
    channels, height, width = shape
    if channels > MAX_CHANNELS:
        raise BitstreamError(f"palette streams have at most {MAX_CHANNELS} latent channels, this one claims {channels}")
    raw = inflate_bounded(payload, 1 + colours.PALETTE_SIZE * channels + height * width, "payload")
    entries = raw[0] + 1 if raw else 0
    if not raw or len(raw) != 1 + entries * channels + height * width:
        raise BitstreamError(f"corrupt payload: {len(raw)} bytes of palette data do not fit a {height}x{width} latent")
    palette = np.frombuffer(raw, dtype=np.uint8, count=entries * channels, offset=1).reshape(entries, channels)
    indices = np.frombuffer(raw, dtype=np.uint8, offset=1 + entries * channels).reshape(height, width)
    if int(indices.max(initial=0)) >= entries:
        raise BitstreamError("corrupt payload: palette index out of range")
    codes = colours.apply_palette(indices, palette).transpose(2, 0, 1)
    return dequantize(codes, step_micro / _MICRO, offset2 / 2)


METHOD = Method(
    id=METHOD_ID,
    name="palette",
    encode=encode,
    decode=decode,
    options={"dither": float_option("dither", 0.0, 1.0)},
    versions=(1, 2, 3, 4, 5),
    max_params=lambda shape: _PARAMS.size,
    max_payload=lambda shape: _deflate_bound(1 + colours.PALETTE_SIZE * shape[0] + shape[1] * shape[2]),
    max_channels=MAX_CHANNELS,
)
