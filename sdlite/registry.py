"""What a model name means (a bundle path or name, a TAE release, a local AutoencoderTiny folder, None), where
bundles are found, the bundle best at a rate, and which decoder reads a stream when the caller names none:
the one the stream names (by model id, in the models folder, the cache and the shipped decoders), a decoder
trained for the codec at the stream's coarseness, or the default decoder of the stream's latent space.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from . import codec_decoders, fetch, releases, tae
from . import latent_space as spaces
from .bundle import EXPORT_HINT, is_bundle, read_bundle
from .manifest import MANIFEST, MODEL_FILE
from .errors import BundleError, ModelNotFoundError
from .files import read_json

log = logging.getLogger("sdlite")

ENV_MODEL = "SDLITE_MODEL"
ENV_MODELS_DIR = "SDLITE_MODELS_DIR"
DEFAULT_MODELS_DIR = "models"


def models_dir() -> Path:
    return Path(os.environ.get(ENV_MODELS_DIR) or DEFAULT_MODELS_DIR)


def available_models(folder: Path | None = None) -> list[str]:
    folder = folder or models_dir()
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and is_bundle(p))


def resolve_model_path(model: str | os.PathLike | None) -> Path:
    """model: a bundle path, a bundle name under the models folder, a TAE release name (taesd, taesd@1.2, taesdxl,
    taesd3, taef1, taef2: fetched from its pinned commit and built once into the model cache, sdlite.fetch), a local
    AutoencoderTiny folder or folder of published .pth files (built once into the cache), or None ($SDLITE_MODEL, then the only bundle in the
    models folder, then the default release, taesd)."""
    if model is None:
        model = os.environ.get(ENV_MODEL) or None
    if model is None:
        names = available_models()
        if len(names) == 1:
            return models_dir() / names[0]
        model = releases.DEFAULT_MODEL  # the pinned TAESD release: fetched once, then offline
    if str(model) in codec_decoders.shipped():
        raise ModelNotFoundError(f"{model} is a set of decoders trained for the codec (no encoder): decode with it "
                                 f"(decompress(data, model={str(model)!r})); compress with its base model, e.g. taesd")
    path = Path(model)
    if path.is_dir() and is_bundle(path):
        return path
    named = models_dir() / str(model)
    if named.is_dir() and is_bundle(named):
        return named
    if path.is_dir() and tae.is_tae_folder(path):
        return fetch.bundle_for_folder(path)
    if path.is_dir() and tae.pth_files(path) is not None:
        return fetch.bundle_for_pth_folder(path)
    if not path.exists() and releases.is_release_name(str(model)):
        return fetch.bundle_for_name(str(model))
    if path.is_dir():
        raise ModelNotFoundError(
            f"{path} is not a model bundle: it has neither {MANIFEST} nor vae_encoder/{MODEL_FILE} / vae_decoder/{MODEL_FILE}; {EXPORT_HINT}"
        )
    close = releases.suggestion(str(model)) if not path.exists() else None
    if close:
        raise ModelNotFoundError(f"no model {model!r}: did you mean {close}?")
    known = available_models()
    choices = f" (bundles in {models_dir()}/: {', '.join(known)})" if known else ""
    raise ModelNotFoundError(f"no model bundle at {model!r}{choices}; {EXPORT_HINT}")


AUTO_MODEL = "auto"
BEST_FROM_BPP = {"sd1": 0.0, "sd3": 0.3}
"""The rate (bits per pixel) from which each latent space's TAE bundle gave the lowest LPIPS-alex in the
four-space quality run (BENCHMARKS.md, Kodak kodim01-12): sd1 below, sd3 above; sdxl and flux never."""


def choose_model(bpp: float, folder: Path | None = None) -> Path:
    """The bundle in the models folder whose latent space is best at `bpp` bits per pixel (BEST_FROM_BPP;
    the next best space when that one has no bundle, then any bundle of a known space), by name within a
    space. ModelNotFoundError when the folder has none."""
    folder = folder or models_dir()
    names = available_models(folder)
    by_space: dict[str, list[str]] = {}
    for name in names:
        try:
            space = read_bundle(folder / name).latent_space_name
        except (BundleError, ModelNotFoundError):
            continue
        by_space.setdefault(space, []).append(name)
    best_here = sorted((s for s in BEST_FROM_BPP if BEST_FROM_BPP[s] <= bpp), key=BEST_FROM_BPP.get, reverse=True)
    best_above = sorted((s for s in BEST_FROM_BPP if BEST_FROM_BPP[s] > bpp), key=BEST_FROM_BPP.get)
    for space in best_here + best_above + sorted(set(by_space) - set(BEST_FROM_BPP)):
        if by_space.get(space):
            return folder / by_space[space][0]
    raise ModelNotFoundError(f"no model bundle in {folder}/ to choose from; {EXPORT_HINT}")


def find_model(model_id: str, folder: Path | None = None) -> Path:
    """The bundle in the models folder whose model id is `model_id` (a stream's encoder); ModelNotFoundError
    naming the bundles there otherwise."""
    folder = folder or models_dir()
    names = available_models(folder)
    for name in names:
        try:
            if read_bundle(folder / name).model_id == model_id:
                return folder / name
        except (BundleError, ModelNotFoundError):
            continue
    listed = f" (bundles there: {', '.join(names)})" if names else ""
    raise ModelNotFoundError(f"no bundle in {folder}/ has model id {model_id}{listed}; pass --model with the encoder's bundle")



SPACE_DEFAULT_RELEASE = {"sd1": "taesd", "sdxl": "taesdxl", "sd3": "taesd3", "flux": "taef1", "flux2": "taef2"}
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


TAE_CLASSES = ("AutoencoderTiny", "TAEOriginal", "TAESD")
"""What a TAE bundle calls its VAE (sdlite.tae and the torch export: AutoencoderTiny; the torch export of published
.pth files: TAEOriginal; other exports: TAESD)."""


def _is_tae(path: Path) -> bool:
    """Whether a bundle's decoder is a TAE (its manifest's vae_class, or its decoder config's class name)."""
    try:
        manifest = read_bundle(path).manifest or {}
        if manifest.get("vae_class") in TAE_CLASSES:
            return True
        config = path / "vae_decoder" / "config.json"
        return config.is_file() and read_json(config).get("_class_name") in TAE_CLASSES
    except (BundleError, OSError):
        return False


@dataclass(frozen=True)
class Choice:
    model: str | Path  # a bundle path or a model name
    reason: str  # "trained", "own" or "fallback"
    note: str | None  # one line for the user when the decoder is not the stream's own


def choose_decoder(model_id: str, space_id: int, step: float | None, *, strict: bool) -> Choice:
    """The decoder for a stream with this model id, latent space id and quantization step (None: no step).

    Not strict: a shipped decoder trained for the codec at this step (when the stream's own decoder is a TAE or
    is nowhere), then the stream's own decoder, then the space's default (a note says which). Strict: the stream's
    own decoder or ModelNotFoundError."""
    space = spaces.by_id(space_id)
    trained = codec_decoders.for_space(space.name) if space is not None else None
    own = find_by_id(model_id)
    if not strict and trained is not None and (own is None or _is_tae(own)):
        # the trained decoders replace the TAE decoder they were fine-tuned from, not another family's (VAElight's own
        # decoder keeps 1.5-2 dB more PSNR on its streams: BENCHMARKS.md)
        band = trained.band_for(step)
        if band is not None:
            return Choice(band.path, "trained", None)
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
