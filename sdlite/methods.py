"""Latent codecs ("methods"): raw float latents (C, h, w) <-> (integer parameters, payload bytes).

Pure numpy/bytes: no sessions, no files. Each method's decoder depends only on integers from the
stream, so decoding is bit-exact on any machine.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from . import palette as _palette
from .bitstream import FORMAT_VERSION, inflate_bounded
from .errors import BitstreamError, OptionError
from .quantize import SEED_OFFSET, SEED_STEP, dequantize, quantize

PALETTE = 1
ENTROPY = 2
METHOD_NAMES = {PALETTE: "palette", ENTROPY: "entropy"}

ZLIB_LEVEL = 9
_MICRO = 1_000_000  # the palette step is stored in millionths of a raw latent unit


@dataclass
class Encoded:
    params: bytes
    payload: bytes
    stats: dict = field(default_factory=dict)


# --- palette: the seed method ------------------------------------------------------------------------
_PALETTE_PARAMS = struct.Struct(">IHB")  # step (micro-units), offset*2, dither strength (percent)


def palette_encode(latents: np.ndarray, *, dither: float = 1.0) -> Encoded:
    """Seed method: 8-bit quantization, 256-entry palette with dithering, zlib level 9."""
    if not 0.0 <= dither <= 1.0:
        raise OptionError(f"dither must be between 0.0 and 1.0, got {dither}")
    channels, height, width = latents.shape
    if channels > 255:
        raise OptionError(f"the palette method supports at most 255 latent channels, got {channels}")
    quantized = quantize(latents)
    pixels = np.ascontiguousarray(quantized.codes.transpose(1, 2, 0))  # (h, w, C)
    palette = _palette.build_palette(pixels.reshape(-1, channels))
    indices = _palette.dither(pixels, palette, dither)
    raw = bytes([len(palette) - 1]) + palette.tobytes() + indices.tobytes()
    params = _PALETTE_PARAMS.pack(round(SEED_STEP * _MICRO), round(SEED_OFFSET * 2), round(dither * 100))
    return Encoded(params, zlib.compress(raw, ZLIB_LEVEL), {"clipped": quantized.clipped, "palette_size": len(palette)})


def palette_decode(params: bytes, payload: bytes, shape: tuple[int, int, int]) -> np.ndarray:
    if len(params) != _PALETTE_PARAMS.size:
        raise BitstreamError("palette method parameters have the wrong length")
    step_micro, offset2, _ = _PALETTE_PARAMS.unpack(params)
    if step_micro == 0:
        raise BitstreamError("palette quantization step is zero")
    channels, height, width = shape
    raw = inflate_bounded(payload, 1 + 256 * channels + height * width, "payload")
    entries = raw[0] + 1 if raw else 0
    if not raw or len(raw) != 1 + entries * channels + height * width:
        raise BitstreamError(f"corrupt payload: {len(raw)} bytes of palette data do not fit a {height}x{width} latent")
    palette = np.frombuffer(raw, dtype=np.uint8, count=entries * channels, offset=1).reshape(entries, channels)
    indices = np.frombuffer(raw, dtype=np.uint8, offset=1 + entries * channels).reshape(height, width)
    if int(indices.max(initial=0)) >= entries:
        raise BitstreamError("corrupt payload: palette index out of range")
    codes = _palette.apply_palette(indices, palette).transpose(2, 0, 1)
    return dequantize(codes, step_micro / _MICRO, offset2 / 2)


def method_id(name: str | int) -> int:
    if isinstance(name, int) and name in METHOD_NAMES:
        return name
    for number, known in METHOD_NAMES.items():
        if name == known:
            return number
    raise OptionError(f"unknown method {name!r}; choose one of: {', '.join(METHOD_NAMES.values())}")


def encode(method: int, latents: np.ndarray, **options) -> Encoded:
    latents = np.asarray(latents, dtype=np.float32)
    if latents.ndim != 3:
        raise OptionError(f"latents must have shape (C, h, w), got {latents.shape}")
    if not np.isfinite(latents).all():
        raise OptionError("latents contain NaN or infinity")
    if method == PALETTE:
        return palette_encode(latents, **options)
    from . import entropy

    return entropy.encode(latents, **options)


def decode(method: int, params: bytes, payload: bytes, shape: tuple[int, int, int], version: int = FORMAT_VERSION) -> np.ndarray:
    if method == PALETTE:
        return palette_decode(params, payload, shape)
    if method == ENTROPY:
        if version < 2:
            raise BitstreamError(
                f"this entropy stream has format version {version}, written by a pre-release sdlite whose context "
                f"model is gone; only version {FORMAT_VERSION} entropy streams decode (version 1 palette streams still do)"
            )
        from . import entropy

        return entropy.decode(params, payload, shape)
    raise BitstreamError(f"unknown method id {method}; this sdlite knows: {METHOD_NAMES}")
