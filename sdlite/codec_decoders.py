"""Decoders trained for the codec, shipped inside the package (sdlite/decoders/NAME/).

A set is one latent space's TAE decoder fine-tuned on sdlite's own quantized latents
(`python -m export.train_decoder`), one network per range of the stream's quantization step (a band): the
stream says how coarse it is, and the band trained for that coarseness decodes it. Where no band was
trained (fine steps, about 0.3 bpp and up on photos) the set has no say, and the stream's own decoder (or
the space's base TAE decoder) is used. Every band is a decoder-only bundle of the same latent space, so
any stream of that space decodes with it and every stream it decodes still decodes with the base.

decoders.json: {"format": 1, "name", "latent_space", "base_model_id", "bands": {BAND: {"folder",
"min_step", "max_step" (null: no upper bound)}}}.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path

from .errors import BundleError
from .files import read_regular

PACKAGE_DIR = Path(__file__).resolve().parent / "decoders"
LISTING = "decoders.json"
MAX_LISTING_BYTES = 64 << 10


@dataclass(frozen=True)
class Band:
    name: str
    path: Path
    min_step: float
    max_step: float

    def holds(self, step: float) -> bool:
        return self.min_step <= step < self.max_step


@dataclass(frozen=True)
class DecoderSet:
    name: str
    latent_space: str
    base_model_id: str
    bands: tuple[Band, ...]

    def band_for(self, step: float | None) -> Band | None:
        """The band trained for this step; None where none was (or the stream has no step)."""
        if step is None or not math.isfinite(step):
            return None
        return next((b for b in self.bands if b.holds(step)), None)

    def nearest(self, step: float | None) -> Band:
        """The band closest to this step (the finest one when the stream has none)."""
        if step is None or not math.isfinite(step):
            return min(self.bands, key=lambda b: b.min_step)
        return min(self.bands, key=lambda b: 0.0 if b.holds(step) else min(abs(math.log(max(step, 1e-9) / max(b.min_step, 1e-9))),
                                                                               abs(math.log(max(step, 1e-9) / b.max_step)) if math.isfinite(b.max_step) else math.inf))


def _read(folder: Path) -> DecoderSet:
    listing = folder / LISTING
    try:
        value = json.loads(read_regular(listing, MAX_LISTING_BYTES, "a decoder set's listing"))
        bands = []
        for name, entry in value["bands"].items():
            low, high = float(entry["min_step"]), entry["max_step"]
            high = math.inf if high is None else float(high)
            path = folder / str(entry["folder"])
            if not (0 <= low < high) or path.resolve().parent != folder.resolve():
                raise ValueError(f"band {name!r} is invalid")
            bands.append(Band(str(name), path, low, high))
        if value.get("format") != 1 or not bands:
            raise ValueError("unknown format or no bands")
        return DecoderSet(str(value["name"]), str(value["latent_space"]), str(value["base_model_id"]), tuple(bands))
    except BundleError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as exc:
        raise BundleError(f"{listing} is not a valid decoder set listing ({type(exc).__name__}: {exc})"[:300]) from None


@functools.lru_cache(maxsize=1)
def shipped() -> dict[str, DecoderSet]:
    """The decoder sets that came with the package, by name (taesd-codec, ...)."""
    if not PACKAGE_DIR.is_dir():
        return {}
    sets = {}
    for folder in sorted(PACKAGE_DIR.iterdir()):
        if (folder / LISTING).is_file():
            found = _read(folder)
            sets[found.name] = found
    return sets


def for_space(space: str | None) -> DecoderSet | None:
    """The shipped set that decodes a latent space's streams by default, if any."""
    return next((s for s in shipped().values() if s.latent_space == space), None)


def band_paths() -> list[Path]:
    return [band.path for decoder_set in shipped().values() for band in decoder_set.bands]
