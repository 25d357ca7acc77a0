"""One checked compression request: the options every entry point (the API, the CLI, the Pillow plugin and
Ray) builds once, with the same checks and the same messages, before any work.

CompressOptions is frozen and picklable (Ray ships it to its workers). Its checks are those that need no
model; `for_model` adds the ones that do. The CLI builds it with `from_args` (flags added by
`add_arguments`), so its errors name flags (--target-bytes) where the API's name keywords (target_bytes).
"""

from __future__ import annotations

import argparse
import dataclasses
from dataclasses import dataclass

import numpy as np

from . import methods
from .bitstream import DEFAULT_MAX_PIXELS
from .errors import OptionError
from .resolution import AUTO, check_scale
from .tiling import DEFAULT_TILE, check_tile

DEFAULT_METHOD = "entropy"  # beats the palette at its bytes on every metric (BENCHMARKS.md)
EFFORTS = (1, 2, 3)
DEFAULT_EFFORT = 1
"""1: no decoder pass. 2: decode the stream with and without reconstruction gains, keep the one closer
to the image. 3: also try the coded scales next to the rule's. Costs: BENCHMARKS.md."""

FLAGS = {
    "method": "--method", "quality": "--quality", "target_bytes": "--target-bytes", "dither": "--dither", "scale": "--scale",
    "effort": "--effort", "tile": "--tile", "max_pixels": "--max-pixels",
}
"""The CLI flag of each option (its error messages name these)."""
_KEYWORDS = {name: name for name in FLAGS}


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _renamed(exc: OptionError, field: str, names: dict) -> OptionError:
    """The same error with the option called as the caller knows it (a flag on the command line)."""
    text = str(exc)
    if names is not _KEYWORDS:
        text = text.replace(f"'{field}'", names[field]).replace(field, names[field], 1)
    return OptionError(text)


def check(values: dict, names: dict = _KEYWORDS) -> dict:
    """The request's values, checked and normalised; the first problem is an OptionError naming the option
    as `names` calls it (keywords, or FLAGS)."""
    values = dict(values)
    method = values["method"]
    if method not in methods.names():
        raise OptionError(f"{names['method']} must be one of {', '.join(methods.names())}, got {method!r}")
    spec = methods.by_name(method)
    if values.get("quality") is not None and values.get("target_bytes") is not None:
        raise OptionError(f"pass {names['quality']} or {names['target_bytes']}, not both")
    for field in ("quality", "target_bytes", "dither"):
        if values.get(field) is None:
            continue
        if field not in spec.options:
            valid = ", ".join(names[o] for o in spec.options) or "none"
            label = f"'{field}'" if names is _KEYWORDS else names[field]
            raise OptionError(f"option {label} does not apply to method {method!r} (its options: {valid})")
        try:
            values[field] = spec.options[field](values[field])
        except OptionError as exc:
            raise _renamed(exc, field, names) from None
    for field, checker in (("scale", check_scale), ("tile", check_tile)):
        try:
            checker(values[field])
        except OptionError as exc:
            raise _renamed(exc, field, names) from None
    effort = values["effort"]
    if not _is_int(effort) or effort not in EFFORTS:
        raise OptionError(f"{names['effort']} must be one of {', '.join(map(str, EFFORTS))}, got {effort!r}")
    values["effort"] = int(effort)
    max_pixels = values["max_pixels"]
    if max_pixels is not None and (not _is_int(max_pixels) or max_pixels < 1):
        raise OptionError(f"{names['max_pixels']} must be a positive integer (or None: no limit), got {max_pixels!r}")
    return values


@dataclass(frozen=True)
class CompressOptions:
    """What to make of an image: method 'entropy' (quality 1..100 or target_bytes) or 'palette' (dither
    0..1); scale 'auto' or 1..4; effort 1..3; tile (latent cells a side, None: never); max_pixels (None:
    no limit). Checked when built: an invalid request never starts work."""

    method: str = DEFAULT_METHOD
    quality: int | None = None
    target_bytes: int | None = None
    dither: float | None = None
    scale: float | str = AUTO
    effort: int = DEFAULT_EFFORT
    tile: int | None = DEFAULT_TILE
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __post_init__(self):
        for field, value in check(dataclasses.asdict(self)).items():
            object.__setattr__(self, field, value)

    @property
    def spec(self):
        return methods.by_name(self.method)

    def method_options(self) -> dict:
        """The method's own options that were given (quality, target_bytes, dither)."""
        return {k: getattr(self, k) for k in ("quality", "target_bytes", "dither") if getattr(self, k) is not None}

    def replace(self, **changes) -> CompressOptions:
        return dataclasses.replace(self, **changes)

    def for_model(self, model) -> CompressOptions:
        """The checks that need the model: effort above 1 decodes candidates, so the bundle needs a decoder."""
        if self.effort > 1 and self.spec.encode_variants is not None and "vae_decoder" not in model.components:
            raise OptionError(f"effort {self.effort} decodes candidate streams, but bundle {model.path} has no vae_decoder; use effort=1")
        return self

    @classmethod
    def from_keywords(cls, keywords: dict, names: dict = _KEYWORDS) -> CompressOptions:
        """From a mapping that may hold other keys (Pillow's encoderinfo): only this class's fields are read."""
        values = {f.name: keywords[f.name] for f in dataclasses.fields(cls) if f.name in keywords}
        defaults = {f.name: f.default for f in dataclasses.fields(cls)}
        return cls(**check({**defaults, **values}, names))

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CompressOptions:
        """From the flags add_arguments defined; errors name the flags."""
        values = {name: getattr(args, name) for name in FLAGS}
        if values["scale"] is None:
            values["scale"] = AUTO
        return cls(**check(values, FLAGS))


def add_arguments(parser: argparse.ArgumentParser, *, compress: bool = True) -> None:
    """The request's flags. compress=False adds only those decompression shares (--tile, --max-pixels)."""
    if compress:
        parser.add_argument("--method", choices=methods.names(), default=DEFAULT_METHOD, help=f"codec method (default {DEFAULT_METHOD})")
        parser.add_argument("--target-bytes", type=int, help="size budget per image (method entropy)")
        parser.add_argument("--quality", type=int, help="1..100, larger is bigger and better (method entropy; default 50)")
        parser.add_argument("--dither", type=float, help="dithering strength 0..1 (method palette)")
        parser.add_argument("--scale", type=float, help="code the image this many times smaller per side, 1..4 (default: automatic by budget)")
        parser.add_argument("--effort", type=int, default=DEFAULT_EFFORT, choices=EFFORTS,
                            help="1: code once (default); 2: also pick reconstruction gains by decoding; 3: also the coded scale")
    parser.add_argument("--tile", type=int, default=DEFAULT_TILE, metavar="CELLS",
                        help=f"encode/decode images over this many latent cells a side by overlapping tiles (default {DEFAULT_TILE})")
    parser.add_argument("--no-tile", dest="tile", action="store_const", const=None, help="never tile (needs more memory on large images)")
    parser.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                        help=f"refuse images larger than this many pixels (default {DEFAULT_MAX_PIXELS})")


__all__ = ["CompressOptions", "add_arguments", "check", "FLAGS", "EFFORTS", "DEFAULT_EFFORT", "DEFAULT_METHOD"]
