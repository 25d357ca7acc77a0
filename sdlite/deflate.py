"""Bounded zlib inflation for stream parts (pure bytes): a crafted stream cannot inflate without bound."""

from __future__ import annotations

import zlib

from .errors import BitstreamError


def inflate_bounded(data: bytes, limit: int, what: str) -> bytes:
    """zlib-inflate at most `limit` bytes in one pass; more, less than a whole stream, trailing bytes or
    corrupt data raise BitstreamError naming `what`."""
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(data, limit + 1)
    except zlib.error as exc:
        raise BitstreamError(f"corrupt {what}: {exc}") from None
    if len(raw) > limit or not inflater.eof or inflater.unused_data:
        raise BitstreamError(f"corrupt {what}: not a complete deflate stream of at most {limit} bytes")
    return raw
