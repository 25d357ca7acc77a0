"""The .sdz container: a versioned header, method parameters, payload and a CRC-32 (pure bytes).

Layout (big-endian)::

    magic        4s   b"SDLZ"
    version      B    FORMAT_VERSION
    method       B    method id (see sdlite.methods)
    factor       B    latent downsample factor (8 for SD)
    model_id     8s   raw bytes of the model's id (16 hex characters)
    width        I    original image width in pixels
    height       I    original image height in pixels
    channels     B    latent channels
    latent_h     H    latent height (= ceil(height / factor))
    latent_w     H    latent width
    params_len   H    length of the method parameters
    params       ...  method parameters (integers only)
    payload_len  I    length of the payload
    payload      ...
    crc32        I    CRC-32 of every byte before it

Every field is validated before anything is allocated from it; any failure raises BitstreamError.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from .errors import BitstreamError

MAGIC = b"SDLZ"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 1 held the entropy method's first context model (no longer decodable; sdlite.methods says
so); its palette streams are the same as version 2's."""
MODEL_ID_BYTES = 8
MAX_SIDE = 65535 * 8
"""Largest width or height the header can describe (latent sides are 16-bit)."""
DEFAULT_MAX_PIXELS = 2048 * 2048
"""Default ceiling on width*height for compress and decompress (SD's VAE attention grows with the
square of the latent area: 2048x2048 already needs several GB on CPU). Pass max_pixels= to change it."""

_HEAD = struct.Struct(">4sBBB8sIIBHHH")
_PAYLOAD_LEN = struct.Struct(">I")
_CRC = struct.Struct(">I")
CONTAINER_OVERHEAD = _HEAD.size + _PAYLOAD_LEN.size + _CRC.size
"""Bytes a stream spends outside method parameters and payload."""


@dataclass(frozen=True)
class Header:
    method: int
    model_id: str  # 16 lowercase hex characters
    width: int
    height: int
    latent_shape: tuple[int, int, int]  # (channels, h, w)
    factor: int = 8
    params: bytes = b""
    version: int = FORMAT_VERSION


def model_id_bytes(model_id: str) -> bytes:
    try:
        raw = bytes.fromhex(model_id)
    except ValueError:
        raw = b""
    if len(raw) != MODEL_ID_BYTES:
        raise BitstreamError(f"model id must be {MODEL_ID_BYTES * 2} hex characters, got {model_id!r}")
    return raw


def pack(header: Header, payload: bytes) -> bytes:
    channels, latent_h, latent_w = header.latent_shape
    if len(header.params) > 0xFFFF:
        raise BitstreamError("method parameters exceed 65535 bytes")
    body = (
        _HEAD.pack(
            MAGIC, header.version, header.method, header.factor, model_id_bytes(header.model_id),
            header.width, header.height, channels, latent_h, latent_w, len(header.params),
        )
        + header.params
        + _PAYLOAD_LEN.pack(len(payload))
        + payload
    )
    return body + _CRC.pack(zlib.crc32(body))


def unpack(data: bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[Header, bytes]:
    """Parse and validate a stream; returns (header, payload)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"compressed data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    minimum = _HEAD.size + _PAYLOAD_LEN.size + _CRC.size
    if len(data) < 4 or data[:4] != MAGIC:
        raise BitstreamError("not an sdlite stream (bad magic); expected data starting with b'SDLZ'")
    if len(data) < minimum:
        raise BitstreamError(f"truncated stream: {len(data)} bytes, a header alone needs {minimum}")
    version = data[4]
    if version not in READABLE_VERSIONS:
        raise BitstreamError(f"unsupported format version {version}; this sdlite reads versions {READABLE_VERSIONS}")
    (stored_crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
    if zlib.crc32(data[: -_CRC.size]) != stored_crc:
        raise BitstreamError("integrity check failed (CRC-32 mismatch): the stream is corrupt or truncated")
    (_, version, method, factor, raw_id, width, height, channels, latent_h, latent_w, params_len) = _HEAD.unpack_from(data)
    offset = _HEAD.size
    if offset + params_len + _PAYLOAD_LEN.size + _CRC.size > len(data):
        raise BitstreamError("truncated stream: method parameters run past the end")
    params = data[offset : offset + params_len]
    offset += params_len
    (payload_len,) = _PAYLOAD_LEN.unpack_from(data, offset)
    offset += _PAYLOAD_LEN.size
    if offset + payload_len + _CRC.size != len(data):
        raise BitstreamError(
            f"payload length {payload_len} does not match the stream ({len(data) - offset - _CRC.size} bytes present)"
        )
    header = Header(method, raw_id.hex(), width, height, (channels, latent_h, latent_w), factor, params, version)
    validate_geometry(header, max_pixels=max_pixels)
    return header, data[offset : offset + payload_len]


def inflate_bounded(data: bytes, limit: int, what: str) -> bytes:
    """zlib-inflate at most `limit` bytes in one pass; more, less than a whole stream, trailing bytes or
    corrupt data raise BitstreamError naming `what` (so a crafted stream cannot inflate without bound)."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BitstreamError(f"corrupt {what}: {exc}") from None
    if len(raw) > limit or not inflater.eof or inflater.unused_data:
        raise BitstreamError(f"corrupt {what}: not a complete deflate stream of at most {limit} bytes")
    return raw


def validate_geometry(header: Header, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    channels, latent_h, latent_w = header.latent_shape
    if header.factor < 1:
        raise BitstreamError("latent downsample factor must be at least 1")
    if header.width < 1 or header.height < 1:
        raise BitstreamError(f"invalid image size {header.width}x{header.height}")
    if max_pixels is not None and header.width * header.height > max_pixels:
        raise BitstreamError(
            f"image size {header.width}x{header.height} exceeds max_pixels={max_pixels}; pass a larger max_pixels to decode it"
        )
    expected = (-(-header.height // header.factor), -(-header.width // header.factor))
    if (latent_h, latent_w) != expected:
        raise BitstreamError(f"latent shape {latent_h}x{latent_w} does not fit image {header.width}x{header.height}")
    if channels < 1:
        raise BitstreamError("latent channel count must be at least 1")
