"""TAE models by name: `model="taesd"` (or taesdxl, taesd3, taef1) fetches the published weights once
(5-10 MB: config.json and diffusion_pytorch_model.safetensors of madebyollin/NAME) into the model cache,
builds the bundle there with sdlite.tae (numpy + onnx, no torch), and uses it from then on; a local
AutoencoderTiny folder given as the model is built into the same cache. As rembg and fastembed do with
their models.

The cache is $SDLITE_CACHE_DIR, else $XDG_CACHE_HOME/sdlite, else ~/.cache/sdlite. The hub is
$SDLITE_HUB_URL (a mirror, or a local server in the tests), else https://huggingface.co. Nothing is
downloaded when $SDLITE_OFFLINE or $HF_HUB_OFFLINE is set; the error then names the local ways.
Downloads are size-bounded and written atomically; what arrives is checked like any other untrusted
file by sdlite.tae before anything is built from it.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import tae, verified
from .errors import ModelNotFoundError, SdliteError

log = logging.getLogger("sdlite")
progress_log = logging.getLogger("sdlite.progress")  # the CLI shows these without -v

ENV_CACHE_DIR = verified.CACHE_DIR_ENV  # one cache folder for hash records, fetched weights and built bundles
ENV_HUB_URL = "SDLITE_HUB_URL"
ENV_OFFLINE = "SDLITE_OFFLINE"
DEFAULT_HUB_URL = "https://huggingface.co"
HUB_ORGANISATION = "madebyollin"
REVISION = "main"
TIMEOUT_S = 30.0  # per socket operation
DEADLINE_S = 600.0  # per file, whatever the server's pace: 256 MB at under 0.5 MB/s is refused
DOWNLOAD_LIMITS = {tae.CONFIG_FILE: tae.MAX_CONFIG_BYTES, tae.WEIGHTS_FILE: tae.MAX_WEIGHTS_BYTES}
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where fetched weights and built bundles live (beside sdlite.verified's records; "off" turns only
    the records off)."""
    return verified.cache_dir() or verified.default_cache_dir()


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in (ENV_OFFLINE, "HF_HUB_OFFLINE"))


def local_ways(name: str) -> str:
    return (f"offline, pass a local AutoencoderTiny folder as the model (config.json + {tae.WEIGHTS_FILE}, such as "
            f"../shared/models/{name}-diffusers or a copy of the hub's {HUB_ORGANISATION}/{name}), put those two files in "
            f"{cache_dir() / 'weights' / name}/, point ${ENV_HUB_URL} at a mirror, or export a bundle with "
            f"`python -m export --vae PATH --output models/{name}`")


def _download(url: str, target: Path, limit: int, progress=None) -> None:
    """url -> target, refusing more than `limit` bytes; the file appears only when whole."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}-", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310 - http(s) only, checked below
            declared = response.headers.get("Content-Length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise ModelNotFoundError(f"{url} announces {int(declared)} bytes, over the {limit} this file may have")
            received, deadline = 0, time.monotonic() + DEADLINE_S
            while chunk := response.read(_CHUNK):
                if time.monotonic() > deadline:
                    raise ModelNotFoundError(f"{url} took over {DEADLINE_S:g} s to send {received} bytes; refusing it")
                received += len(chunk)
                if received > limit:
                    raise ModelNotFoundError(f"{url} sent over {limit} bytes, more than this file may have; refusing it")
                out.write(chunk)
                if progress:
                    progress(target.name, received, int(declared) if declared and declared.isdigit() else None)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def fetch_weights(name: str, *, progress=None) -> Path:
    """The folder holding NAME's config.json and safetensors in the cache, downloaded if absent."""
    if name not in tae.TINY_AUTOENCODERS:
        raise ModelNotFoundError(f"unknown TAE model {name!r}; choose one of {', '.join(tae.TINY_AUTOENCODERS)}")
    folder = cache_dir() / "weights" / name
    if all((folder / f).is_file() for f in DOWNLOAD_LIMITS):
        return folder
    if offline():
        raise ModelNotFoundError(f"model {name!r} is not in the cache and downloads are off (${ENV_OFFLINE} / $HF_HUB_OFFLINE); "
                                 + local_ways(name))
    base = (os.environ.get(ENV_HUB_URL) or DEFAULT_HUB_URL).rstrip("/")
    if not base.startswith(("https://", "http://")):
        raise ModelNotFoundError(f"${ENV_HUB_URL} must be an http(s) URL, got {base!r}")
    progress_log.info("fetching %s/%s (config.json and %s, 5-10 MB) into %s", HUB_ORGANISATION, name, tae.WEIGHTS_FILE, folder)
    for file, limit in DOWNLOAD_LIMITS.items():
        url = f"{base}/{HUB_ORGANISATION}/{name}/resolve/{REVISION}/{file}"
        try:
            _download(url, folder / file, limit, progress)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ModelNotFoundError(f"cannot fetch {url} ({type(exc).__name__}: {reason}); " + local_ways(name)) from None
    return folder


def bundle_for_name(name: str, *, progress=None) -> Path:
    """The cached bundle of a TAE model name, fetched and built on first use."""
    bundle = cache_dir() / name
    if (bundle / "manifest.json").is_file():
        return bundle
    folder = fetch_weights(name, progress=progress)
    origin = {"kind": "hub", "model": f"{HUB_ORGANISATION}/{name}", "revision": REVISION, "vae": None}
    _build(folder, bundle, tae.TINY_AUTOENCODERS[name], origin)
    return bundle


def bundle_for_folder(folder: Path, *, latent_space: str | None = None) -> Path:
    """The cached bundle of a local AutoencoderTiny folder, built on first use (keyed by the weights' hash,
    so a changed folder gets a new bundle)."""
    digest = _weights_digest(Path(folder) / tae.WEIGHTS_FILE)[:16]
    config = tae.read_config(Path(folder))
    space = tae.resolve_space(Path(folder), config, latent_space)
    bundle = cache_dir() / "built" / f"{space.name}-{digest}"
    if not (bundle / "manifest.json").is_file():
        _build(Path(folder), bundle, space.name, None)
    return bundle


_digests: dict[tuple, str] = {}


def _weights_digest(path: Path) -> str:
    """The weights file's sha256, hashed once per version of the file (every load_model(folder) asks)."""
    from .bundle import file_sha256
    from .sessions import file_identity

    key = (os.path.realpath(path), file_identity(path))
    if key not in _digests:
        _digests[key] = file_sha256(path)
    return _digests[key]


def _build(source: Path, bundle: Path, space: str, origin) -> None:
    progress_log.info("building the ONNX bundle %s from %s (numpy + onnx, once)", bundle, source)
    try:
        tae.build_bundle(source, bundle, latent_space=space, origin=origin)
    except SdliteError:
        raise
    except (OSError, ValueError) as exc:
        raise ModelNotFoundError(f"cannot build a bundle from {source} into {bundle}: {type(exc).__name__}: {exc}"[:400]) from None
    except ImportError as exc:
        raise ModelNotFoundError(f"building a TAE bundle needs the onnx package ({exc}); pip install onnx") from None


def clear_downloads() -> None:
    """Remove the cache (weights and built bundles)."""
    shutil.rmtree(cache_dir(), ignore_errors=True)
