"""The .sdz container: a versioned header, method parameters, payload and a CRC-32 (pure bytes).

Layout of format versions 3, 4 and 5 (big-endian; version 4 changed the entropy method's coding and
version 5 added its channel transform 5, not the container)::

    magic        4s   b"SDLZ"
    version      B    FORMAT_VERSION
    method       B    method id (see sdlite.methods)
    latent_space B    latent space id (see sdlite.latent_space; 0: unknown)
    factor       B    latent downsample factor (8 for SD)
    scale        B    coded resolution: the image was coded at its size * 8 / scale (8: full size)
    model_id     8s   raw bytes of the encoder's model id (16 hex characters)
    width        I    image width in pixels
    height       I    image height in pixels
    channels     B    latent channels
    latent_h     H    latent height (= ceil(coded height / factor))
    latent_w     H    latent width
    params_len   H    length of the method parameters
    params       ...  method parameters (integers only)
    payload_len  I    length of the payload
    payload      ...
    crc32        I    CRC-32 of every byte before it

Versions 1 and 2 had no latent_space and scale bytes (read as unknown and 8). Every field is validated
before anything is allocated from it; any failure raises BitstreamError.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

from . import latent_space as spaces
from . import methods
from .errors import BitstreamError

MAGIC = b"SDLZ"
FORMAT_VERSION = 5
READABLE_VERSIONS = (1, 2, 3, 4, 5)
"""Which methods' streams each version still decodes is the method's business (sdlite.methods)."""
MODEL_ID_BYTES = 8
MAX_SIDE = 65535 * 8
"""Largest width or height the header can describe at factor 8 (latent sides are 16-bit)."""
DEFAULT_MAX_PIXELS = 2048 * 2048
"""Default ceiling on width*height for compress and decompress (SD's VAE attention grows with the
square of the latent area: 2048x2048 already needs several GB on CPU). Pass max_pixels= to change it."""
MAX_FACTOR = 64
"""Largest latent downsample factor a stream may declare."""
MAX_LATENT_CHANNELS = 64
"""Most latent channels a stream may declare (SD 1.x/XL have 4, SD3 and Flux 16)."""
LATENT_VALUES_PER_PIXEL = 0.25
"""Bound on channels * latent_h * latent_w per image pixel allowed by max_pixels: 16 channels at factor
8 need 0.25. A crafted stream with factor 1 or hundreds of channels is refused before any allocation."""
SCALE_UNIT = 8
"""The scale byte counts eighths: 8 is full size, 12 codes a 1.5x smaller image."""
MAX_SCALE = 32

_PREFIX = struct.Struct(">4sB")
_HEAD_V3 = struct.Struct(">4sBBBBB8sIIBHHH")
_HEAD_V2 = struct.Struct(">4sBBB8sIIBHHH")
_PAYLOAD_LEN = struct.Struct(">I")
_CRC = struct.Struct(">I")
CONTAINER_OVERHEAD = _HEAD_V3.size + _PAYLOAD_LEN.size + _CRC.size
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
    latent_space: int = spaces.UNKNOWN_ID
    scale: int = SCALE_UNIT

    @property
    def coded_size(self) -> tuple[int, int]:
        """(width, height) of the image the latent was made from: the image's size divided by scale/8."""
        return coded_size(self.width, self.height, self.scale)


def coded_size(width: int, height: int, scale: int) -> tuple[int, int]:
    """Integer maths only, so encoder and decoder agree: round(side * SCALE_UNIT / scale), at least 1."""
    def side(n):
        return max(1, (2 * n * SCALE_UNIT + scale) // (2 * scale))

    return side(width), side(height)


def model_id_bytes(model_id: str) -> bytes:
    try:
        raw = bytes.fromhex(model_id)
    except (ValueError, TypeError):
        raw = b""
    if len(raw) != MODEL_ID_BYTES:
        raise BitstreamError(f"model id must be {MODEL_ID_BYTES * 2} hex characters, got {model_id!r}")
    return raw


def pack(header: Header, payload: bytes) -> bytes:
    if header.version != FORMAT_VERSION:
        raise BitstreamError(f"this sdlite writes format version {FORMAT_VERSION} only")
    channels, latent_h, latent_w = header.latent_shape
    if len(header.params) > 0xFFFF:
        raise BitstreamError("method parameters exceed 65535 bytes")
    body = (
        _HEAD_V3.pack(
            MAGIC, header.version, header.method, header.latent_space, header.factor, header.scale, model_id_bytes(header.model_id),
            header.width, header.height, channels, latent_h, latent_w, len(header.params),
        )
        + header.params
        + _PAYLOAD_LEN.pack(len(payload))
        + payload
    )
    return body + _CRC.pack(zlib.crc32(body))


class _Bytes:
    """A stream held in memory, read in order."""

    def __init__(self, data: bytes):
        self.data, self.at = data, 0

    def read(self, count: int) -> bytes:
        chunk = self.data[self.at : self.at + count]
        self.at += len(chunk)
        return chunk

    def at_end(self) -> bool:
        return self.at >= len(self.data)


class _File:
    """A stream in an open binary file, read in order and never more than asked for; with record, the
    bytes read are kept (read_file returns them)."""

    def __init__(self, handle, record: bool = False):
        self.handle = handle
        self.recorded: list[bytes] | None = [] if record else None

    def read(self, count: int) -> bytes:
        parts, left = [], count
        while left > 0:
            chunk = self.handle.read(min(left, _READ_CHUNK))
            if not chunk:
                break
            parts.append(chunk)
            left -= len(chunk)
        data = b"".join(parts)
        if self.recorded is not None:
            self.recorded.append(data)
        return data

    def at_end(self) -> bool:
        return not self.handle.read(1)


_READ_CHUNK = 1 << 20


def _exactly(source, count: int, what: str) -> bytes:
    chunk = source.read(count)
    if len(chunk) != count:
        raise BitstreamError(f"truncated stream: {what} runs past the end")
    return chunk


def _read(source, *, max_pixels: int | None, keep_payload: bool = True) -> tuple[Header, bytes | None, int]:
    """Parse and validate a stream from a source, field by field: each length is checked against what the
    header's shape allows before anything that long is read, so a hostile file costs no more than its
    claims justify. Returns (header, payload or None when not kept, payload length)."""
    magic = source.read(4)
    if magic != MAGIC:
        raise BitstreamError("not an sdlite stream (bad magic); expected data starting with b'SDLZ'")
    version_byte = source.read(1)
    if not version_byte:
        raise BitstreamError("truncated stream: no format version")
    version = version_byte[0]
    if version not in READABLE_VERSIONS:
        raise BitstreamError(f"unsupported format version {version}; this sdlite reads versions {READABLE_VERSIONS}")
    head = _HEAD_V3 if version >= 3 else _HEAD_V2
    head_bytes = magic + version_byte + _exactly(source, head.size - _PREFIX.size, "the header")
    if version >= 3:
        (_, _, method, space, factor, scale, raw_id, width, height, channels, latent_h, latent_w, params_len) = head.unpack(head_bytes)
    else:
        (_, _, method, factor, raw_id, width, height, channels, latent_h, latent_w, params_len) = head.unpack(head_bytes)
        space, scale = spaces.UNKNOWN_ID, SCALE_UNIT
    header = Header(method, raw_id.hex(), width, height, (channels, latent_h, latent_w), factor, b"", version, space, scale)
    validate_geometry(header, max_pixels=max_pixels)
    method_spec = methods.by_id(method)
    method_spec.check_version(version)
    if channels > method_spec.max_channels:
        raise BitstreamError(f"{method_spec.name} streams have at most {method_spec.max_channels} latent channels, this one claims {channels}")
    if params_len > method_spec.max_params(header.latent_shape):
        raise BitstreamError(f"{method_spec.name} parameters of {params_len} bytes exceed what a {header.latent_shape} latent needs")
    params = _exactly(source, params_len, "method parameters")
    length_bytes = _exactly(source, _PAYLOAD_LEN.size, "the payload length")
    (payload_len,) = _PAYLOAD_LEN.unpack(length_bytes)
    most = method_spec.max_payload(header.latent_shape)
    if payload_len > most:
        raise BitstreamError(f"payload length {payload_len} exceeds what a {header.latent_shape} {method_spec.name} latent can need ({most} bytes)")
    crc = zlib.crc32(head_bytes + params + length_bytes)
    payload = None
    if keep_payload:
        payload = _exactly(source, payload_len, "the payload")
        crc = zlib.crc32(payload, crc)
    else:
        left = payload_len
        while left:
            chunk = _exactly(source, min(left, _READ_CHUNK), "the payload")
            crc = zlib.crc32(chunk, crc)
            left -= len(chunk)
    (stored_crc,) = _CRC.unpack(_exactly(source, _CRC.size, "the CRC-32"))
    if crc != stored_crc:
        raise BitstreamError("integrity check failed (CRC-32 mismatch): the stream is corrupt or truncated")
    if not source.at_end():
        raise BitstreamError(f"payload length {payload_len} does not match the stream: bytes follow its CRC-32")
    return Header(method, raw_id.hex(), width, height, (channels, latent_h, latent_w), factor, params, version, space, scale), payload, payload_len


def unpack(data: bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> tuple[Header, bytes]:
    """Parse and validate a stream; returns (header, payload). Method parameters longer than the
    method allows for the declared shape, unknown methods and retired versions are refused here."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise BitstreamError(f"compressed data must be bytes, got {type(data).__name__}")
    data = bytes(data)
    if data[:4] == MAGIC and len(data) >= _HEAD_V2.size + _PAYLOAD_LEN.size + _CRC.size:
        (stored_crc,) = _CRC.unpack_from(data, len(data) - _CRC.size)
        if zlib.crc32(memoryview(data)[: -_CRC.size]) != stored_crc:  # in memory, integrity is the first thing to tell
            raise BitstreamError("integrity check failed (CRC-32 mismatch): the stream is corrupt or truncated")
    header, payload, _ = _read(_Bytes(data), max_pixels=max_pixels)
    return header, payload


def _open_regular(path):
    """An open binary file at path, refused unless it is a regular file (a FIFO would block, a device
    never end)."""
    import os
    import stat as stat_module

    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        raise BitstreamError(f"cannot read {path}: {exc.strerror or exc}") from None
    if not stat_module.S_ISREG(mode):
        raise BitstreamError(f"{path} is not a regular file")
    try:
        return open(path, "rb")
    except OSError as exc:
        raise BitstreamError(f"cannot read {path}: {exc.strerror or exc}") from None


def read_stream(handle, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> bytes:
    """The bytes of one stream from an open binary file, reading no more than its header's shape
    justifies (bounded by max_pixels) and nothing after its end but one byte; anything else about it
    raises BitstreamError."""
    source = _File(handle, record=True)
    _read(source, max_pixels=max_pixels)
    return b"".join(source.recorded)


def read_file(path, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> bytes:
    """read_stream() of a regular file (FIFOs and devices are refused before they are opened)."""
    with _open_regular(path) as handle:
        return read_stream(handle, max_pixels=max_pixels)


def read_header_file(path) -> tuple[Header, int, int]:
    """(header, payload length, total bytes) of the stream in a regular file, its CRC checked while
    streaming: memory stays bounded whatever the file's size (sdlite info)."""
    with _open_regular(path) as handle:
        header, _, payload_len = _read(_File(handle), max_pixels=None, keep_payload=False)
    head = _HEAD_V3 if header.version >= 3 else _HEAD_V2
    return header, payload_len, head.size + len(header.params) + _PAYLOAD_LEN.size + payload_len + _CRC.size


def validate_geometry(header: Header, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> None:
    """Every size field against the others and against max_pixels, before anything is allocated."""
    channels, latent_h, latent_w = header.latent_shape
    if not 1 <= header.factor <= MAX_FACTOR:
        raise BitstreamError(f"latent downsample factor {header.factor} is outside 1..{MAX_FACTOR}")
    if not SCALE_UNIT <= header.scale <= MAX_SCALE:
        raise BitstreamError(f"scale byte {header.scale} is outside {SCALE_UNIT}..{MAX_SCALE}")
    if header.width < 1 or header.height < 1:
        raise BitstreamError(f"invalid image size {header.width}x{header.height}")
    if max_pixels is not None and header.width * header.height > max_pixels:
        raise BitstreamError(
            f"image size {header.width}x{header.height} exceeds max_pixels={max_pixels}; pass a larger max_pixels to decode it"
        )
    if not 1 <= channels <= MAX_LATENT_CHANNELS:
        raise BitstreamError(f"latent channel count {channels} is outside 1..{MAX_LATENT_CHANNELS}")
    space = spaces.by_id(header.latent_space)
    if space is not None and (channels, header.factor) != (space.channels, space.factor):
        raise BitstreamError(
            f"stream claims latent space {space.name} ({space.channels} channels, factor {space.factor}) "
            f"but {channels} channels at factor {header.factor}"
        )
    coded_w, coded_h = header.coded_size
    expected = (-(-coded_h // header.factor), -(-coded_w // header.factor))
    if (latent_h, latent_w) != expected:
        raise BitstreamError(f"latent shape {latent_h}x{latent_w} does not fit image {header.width}x{header.height}")
    if max_pixels is not None and channels * latent_h * latent_w > max(64, 1.1 * LATENT_VALUES_PER_PIXEL * max_pixels):
        raise BitstreamError(
            f"latent of {channels}x{latent_h}x{latent_w} values is larger than max_pixels={max_pixels} allows "
            f"({LATENT_VALUES_PER_PIXEL:g} per pixel); pass a larger max_pixels to decode it"
        )
