"""Which decoder reads a stream when the caller names none: the one the stream names (by model id, in the
models folder, the cache and the shipped decoders), a decoder trained for the codec at the stream's
coarseness, or the default decoder of the stream's latent space.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from . import codec_decoders, fetch
from . import latent_space as spaces
from .bundle import available_models, models_dir, read_bundle
from .errors import BundleError, ModelNotFoundError

log = logging.getLogger("sdlite")

SPACE_DEFAULT_RELEASE = {"sd1": "taesd", "sdxl": "taesdxl", "sd3": "taesd3", "flux": "taef1"}
"""The base TAE release that decodes a latent space's streams when nothing better is at hand."""


def candidate_bundles() -> list[Path]:
    """Every bundle sdlite can reach without a network: the models folder, the cache (fetched and built
    bundles) and the shipped decoders."""
    folder = models_dir()
    found = [folder / name for name in available_models(folder)]
    found += fetch.cached_bundles()
    found += codec_decoders.band_paths()
    return found


def find_by_id(model_id: str) -> Path | None:
    """The first reachable bundle whose model id is `model_id`, or None."""
    for path in candidate_bundles():
        try:
            if read_bundle(path).model_id == model_id:
                return path
        except (BundleError, ModelNotFoundError, OSError):
            continue
    return None


@dataclass(frozen=True)
class Choice:
    model: str | Path  # a bundle path or a model name
    reason: str  # "trained", "own" or "fallback"
    note: str | None  # one line for the user when the decoder is not the stream's own


def choose_decoder(model_id: str, space_id: int, step: float | None, *, strict: bool) -> Choice:
    """The decoder for a stream with this model id, latent space id and quantization step (None: no step).

    Not strict: a shipped decoder trained for the codec at this step first, then the stream's own decoder,
    then the space's default (a note says which). Strict: the stream's own decoder or ModelNotFoundError."""
    space = spaces.by_id(space_id)
    trained = codec_decoders.for_space(space.name) if space is not None else None
    if not strict and trained is not None:
        band = trained.band_for(step)
        if band is not None:
            return Choice(band.path, "trained", None)
    own = find_by_id(model_id)
    if own is not None:
        return Choice(own, "own", None)
    if strict:
        raise ModelNotFoundError(f"no decoder with the stream's model id {model_id} here (searched {models_dir()}/, "
                                 f"{fetch.cache_dir()} and the shipped decoders); pass the encoder's model (--model), or decode with "
                                 "its latent space's default decoder (--decoder-mismatch allow)")
    if space is None:
        raise ModelNotFoundError(f"the stream's model {model_id} is not here and its latent space is unknown, so no other decoder "
                                 "can stand in; pass the encoder's model (--model)")
    if trained is not None:
        band = trained.nearest(step)
        return Choice(band.path, "fallback", f"model {model_id} is not here: decoding with {trained.name} ({band.name}), "
                                             f"a decoder of the same latent space ({space.name})")
    release = SPACE_DEFAULT_RELEASE.get(space.name)
    if release is None:
        raise ModelNotFoundError(f"the stream's model {model_id} is not here and latent space {space.name} has no default decoder; "
                                 "pass a decoder of that space (--model)")
    return Choice(release, "fallback", f"model {model_id} is not here: decoding with {release}, the default decoder of latent "
                                       f"space {space.name}")
