"""Latent codecs ("methods"): raw float latents (C, h, w) <-> (integer parameters, payload bytes).

One module per method; each defines a `METHOD` (its stream id, name, options, encoder and decoder),
and this table is the one place codec and bitstream look methods up. Methods are pure numpy/bytes:
no sessions, no files, and each decoder depends only on integers from the stream, so decoding is
bit-exact on any machine.
"""

from __future__ import annotations

from ..errors import BitstreamError, OptionError
from .base import Encoded, Method
from .entropy import METHOD as ENTROPY_METHOD
from .palette import METHOD as PALETTE_METHOD

__all__ = ["Encoded", "Method", "METHODS", "PALETTE", "ENTROPY", "by_name", "by_id", "names"]

METHODS: dict[int, Method] = {m.id: m for m in (PALETTE_METHOD, ENTROPY_METHOD)}
PALETTE = PALETTE_METHOD.id
ENTROPY = ENTROPY_METHOD.id


def names() -> list[str]:
    return [m.name for m in METHODS.values()]


def by_name(name) -> Method:
    """A method by name (or by id, for callers holding a header's method number)."""
    for method in METHODS.values():
        if name == method.name or (isinstance(name, int) and not isinstance(name, bool) and name == method.id):
            return method
    raise OptionError(f"unknown method {name!r}; choose one of: {', '.join(names())}")


def by_id(number: int) -> Method:
    """The method of a stream's method id; an unknown id is a BitstreamError."""
    method = METHODS.get(number)
    if method is None:
        raise BitstreamError(f"unknown method id {number}; this sdlite knows: " + ", ".join(f"{m.id} ({m.name})" for m in METHODS.values()))
    return method
