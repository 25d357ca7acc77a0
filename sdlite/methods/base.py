"""What every method provides to the codec and the bitstream (see sdlite.methods)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..errors import BitstreamError, OptionError


@dataclass
class Encoded:
    params: bytes  # integers only: everything the decoder's model depends on
    payload: bytes
    stats: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """id: the stream's method byte; options: the keyword options `encode` takes, each with a checker
    that returns the normalised value or raises OptionError; versions: the stream format versions whose
    streams of this method still decode, and `retired` a message for the others; decode(params, payload,
    shape, version) -> (C, h, w) float32; max_params(shape): the most parameter bytes a valid stream of
    this shape can carry (the bitstream refuses more before anything is inflated), max_payload(shape) the
    largest payload one can (the bitstream refuses longer ones before reading them); estimate_bytes, for
    methods whose rate follows their options, predicts the size without coding; a space-aware method is
    told the latent space of what it codes."""

    id: int
    name: str
    encode: Callable[..., Encoded]
    decode: Callable[..., np.ndarray]
    options: dict[str, Callable]
    versions: tuple[int, ...]
    max_params: Callable[[tuple[int, int, int]], int]
    max_payload: Callable[[tuple[int, int, int]], int]
    max_channels: int = 255
    retired: str = ""
    estimate_bytes: Callable | None = None  # (latents, **options) -> parameter + payload bytes; rate-controlled methods only
    encode_variants: Callable | None = None  # (latents, **options) -> [Encoded] of one size, for the encoder to choose by decoding
    space_aware: bool = False  # encode, estimate_bytes and encode_variants take latent_space= (a LatentSpace or None)

    def check_options(self, **given) -> dict:
        """Options that were given (not None), normalised; an option of another method is an OptionError."""
        checked = {}
        for name, value in given.items():
            if value is None:
                continue
            if name not in self.options:
                valid = ", ".join(self.options) or "none"
                raise OptionError(f"option {name!r} does not apply to method {self.name!r} (its options: {valid})")
            checked[name] = self.options[name](value)
        return checked

    def context(self, latent_space) -> dict:
        """The keyword arguments telling encode (and friends) the latent space, for space-aware methods."""
        return {"latent_space": latent_space} if self.space_aware else {}

    def check_version(self, version: int) -> None:
        if version not in self.versions:
            raise BitstreamError(
                f"this {self.name} stream has format version {version}; {self.retired or 'it is not readable by this sdlite'} "
                f"(readable {self.name} versions: {', '.join(map(str, self.versions))})"
            )


def integer_option(name: str, low: int, high: int | None = None) -> Callable:
    """A checker for an integer option in [low, high] (high None: unbounded)."""

    def check(value):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low or (high is not None and value > high):
            bound = f"from {low} to {high}" if high is not None else f">= {low}"
            raise OptionError(f"{name} must be an integer {bound}, got {value!r}")
        return int(value)

    return check


def float_option(name: str, low: float, high: float) -> Callable:
    def check(value):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = float("nan")
        if isinstance(value, bool) or not low <= number <= high:
            raise OptionError(f"{name} must be a number from {low} to {high}, got {value!r}")
        return number

    return check
