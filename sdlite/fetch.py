"""TAE models by name: `model="taesd"` (or taesd@1.2, taesdxl, taesd3, taef1) fetches the pinned release's
two .pth files once (5 MB) into the model cache, checks each against its git blob hash (sdlite.releases),
reads them without torch (sdlite.pth), builds the bundle there with sdlite.tae, and uses it from then on; a
local AutoencoderTiny folder given as the model is built into the same cache. As rembg and fastembed do.

Why not huggingface_hub: the pinned source is the weights' own git repository (GitHub), whose files are
checked here against hashes sdlite ships, so neither the hub's moving `main` nor the server is trusted;
and the runtime keeps to numpy, Pillow, onnx and onnxruntime (huggingface_hub brings requests, tqdm,
fsspec and its own cache rules). What it would give, this module does: a lock so that one process builds
while the others wait, nothing named final before it is verified, mirrors ($SDLITE_HUB_URL).

The cache is $SDLITE_CACHE_DIR, else $XDG_CACHE_HOME/sdlite, else ~/.cache/sdlite; it must belong to this
user and be writable by no one else. The source is $SDLITE_HUB_URL (a mirror serving
/madebyollin/taesd/raw/COMMIT/FILE, or a local server in the tests), else https://github.com. Nothing is
downloaded when $SDLITE_OFFLINE or $HF_HUB_OFFLINE is set; the error then names the local ways.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import logging
import os
import shutil
import socket
import stat
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from . import latent_space as spaces
from . import releases, tae, verified
from .files import file_sha256, write_atomic
from .sessions import file_identity
from .errors import BundleError, ModelNotFoundError, SdliteError
from .logs import progress_log

log = logging.getLogger("sdlite")

ENV_CACHE_DIR = verified.CACHE_DIR_ENV  # one cache folder for hash records, fetched weights and built bundles
ENV_HUB_URL = "SDLITE_HUB_URL"
ENV_OFFLINE = "SDLITE_OFFLINE"
DEFAULT_HUB_URL = "https://github.com"
HUB_ORGANISATION = "madebyollin"
TIMEOUT_S = 30.0  # per socket operation
DEADLINE_S = 600.0  # per file, whatever the server's pace: each read is bounded, and the deadline checked after it
MAX_PTH_BYTES = tae.MAX_PTH_BYTES
_CHUNK = 1 << 16
OWN_FOLDERS = ("weights", "built", "locks")
"""What sdlite puts in the cache besides the bundles named by release (taesd@1.3, ...) and verified's records."""


def cache_dir() -> Path:
    """Where fetched weights and built bundles live (beside sdlite.verified's records; "off" turns only
    the records off)."""
    return verified.cache_dir() or verified.default_cache_dir()


def check_owned(folder: Path) -> None:
    """Refuse a cache folder another user owns or may write: a bundle planted there would run as ours."""
    try:
        info = folder.lstat()
    except FileNotFoundError:
        return
    except OSError as exc:
        raise BundleError(f"cannot inspect {folder}: {exc}") from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise BundleError(f"{folder} is not a plain folder; sdlite keeps its model cache in plain folders")
    if info.st_uid != os.getuid():
        raise BundleError(f"{folder} belongs to user {info.st_uid}, not to you ({os.getuid()}): sdlite uses no model another "
                          f"user could have planted; point ${ENV_CACHE_DIR} at a folder of your own")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise BundleError(f"{folder} may be written by other users (mode {stat.S_IMODE(info.st_mode):o}); "
                          f"`chmod go-w {folder}` or point ${ENV_CACHE_DIR} at a folder of your own")


def _checked_cache(*parts: str) -> Path:
    root = cache_dir()
    check_owned(root)
    folder = root.joinpath(*parts)
    for level in [root.joinpath(*parts[: i + 1]) for i in range(len(parts))]:
        check_owned(level)
    return folder


def offline() -> bool:
    return any(os.environ.get(v, "").lower() in ("1", "true", "yes", "on") for v in (ENV_OFFLINE, "HF_HUB_OFFLINE"))


def local_ways(name: str) -> str:
    return (f"offline, give --model a local AutoencoderTiny folder (e.g. ../shared/models/{name}-diffusers) "
            f"or set ${ENV_HUB_URL} to a mirror of {releases.REPOSITORY}")


@contextlib.contextmanager
def build_lock(name: str):
    """An exclusive lock per cached thing: one process fetches and builds while the others wait for it."""
    folder = _checked_cache("locks")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(folder / f"{name}.lock", "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class _Watchdog:
    """Shuts down every socket of one download when its deadline passes, whatever phase it is in (connecting,
    a server dripping its status line or headers, the body): a blocked read then returns at once."""

    def __init__(self, seconds: float):
        self.sockets: list = []
        self.expired = False
        self.lock = threading.Lock()
        self.timer = threading.Timer(seconds, self.expire)
        self.timer.daemon = True

    def add(self, sock) -> None:
        with self.lock:
            self.sockets.append(sock)
            if self.expired:
                self._shut(sock)

    def expire(self) -> None:
        with self.lock:
            self.expired = True
            for sock in self.sockets:
                self._shut(sock)

    @staticmethod
    def _shut(sock) -> None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def opener(self):
        watchdog = self

        class Connection(http.client.HTTPConnection):
            def connect(self):
                super().connect()
                watchdog.add(self.sock)

        class SecureConnection(http.client.HTTPSConnection):
            def connect(self):
                super().connect()
                watchdog.add(self.sock)

        class Handler(urllib.request.HTTPHandler):
            def http_open(self, req):
                return self.do_open(Connection, req)

        class SecureHandler(urllib.request.HTTPSHandler):
            def https_open(self, req):
                return self.do_open(SecureConnection, req, context=self._context)

        return urllib.request.build_opener(Handler, SecureHandler)


def download(url: str, limit: int, *, expected_blob: str | None = None, progress=None) -> bytes:
    """The bytes at url, refused (nothing kept) unless whole: at most `limit` bytes, exactly the announced
    Content-Length, no content encoding, the whole exchange (connection, headers, body) within DEADLINE_S, and,
    when given, the git blob hash expected."""
    watchdog = _Watchdog(DEADLINE_S)
    watchdog.timer.start()
    try:
        return _download(url, limit, expected_blob=expected_blob, progress=progress, watchdog=watchdog)
    except (OSError, http.client.HTTPException, ValueError) as exc:
        if watchdog.expired:
            raise ModelNotFoundError(f"{url} took over {DEADLINE_S:g} s; refusing it") from None
        if isinstance(exc, http.client.HTTPException):
            raise ModelNotFoundError(f"cannot fetch {url}: {type(exc).__name__}: {exc}"[:300]) from None
        raise
    finally:
        watchdog.timer.cancel()


def _download(url: str, limit: int, *, expected_blob, progress, watchdog: _Watchdog) -> bytes:
    deadline = time.monotonic() + DEADLINE_S
    request = urllib.request.Request(url, headers={"Accept-Encoding": "identity"})
    with watchdog.opener().open(request, timeout=TIMEOUT_S) as response:
        encoding = (response.headers.get("Content-Encoding") or "identity").strip().lower()
        if encoding != "identity":
            raise ModelNotFoundError(f"{url} came {encoding}-encoded; sdlite asked for the file as it is")
        declared = response.headers.get("Content-Length")
        declared = int(declared) if declared is not None and declared.strip().isdigit() else None
        if declared is not None and declared > limit:
            raise ModelNotFoundError(f"{url} announces {declared} bytes, over the {limit} this file may have")
        parts, received = [], 0
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise ModelNotFoundError(f"{url} took over {DEADLINE_S:g} s to send {received} bytes; refusing it")
            chunk = response.read1(_CHUNK)  # the watchdog shuts the socket at the deadline: this returns then
            if watchdog.expired:
                raise ModelNotFoundError(f"{url} took over {DEADLINE_S:g} s to send {received} bytes; refusing it")
            if not chunk:
                break
            received += len(chunk)
            if received > limit:
                raise ModelNotFoundError(f"{url} sent over {limit} bytes, more than this file may have; refusing it")
            parts.append(chunk)
            if progress:
                progress(url.rsplit("/", 1)[-1], received, declared)
    data = b"".join(parts)
    if declared is not None and len(data) != declared:
        raise ModelNotFoundError(f"{url} announced {declared} bytes but sent {len(data)} (a dropped connection?); nothing was kept")
    if expected_blob is not None and releases.git_blob_sha1(data) != expected_blob:
        raise ModelNotFoundError(f"{url} is not the pinned file (git blob {releases.git_blob_sha1(data)}, expected {expected_blob}); "
                                 "nothing was kept")
    return data


def fetch_release(release: releases.Release, *, progress=None) -> Path:
    """The folder holding the release's two .pth files in the cache, each verified against its pinned blob hash
    (a cached file that no longer matches is fetched again)."""
    folder = _checked_cache("weights", release.label)
    missing = []
    for pinned in (release.encoder, release.decoder):
        path = folder / pinned.file
        if path.is_file() and path.stat().st_size <= MAX_PTH_BYTES and releases.git_blob_sha1(path.read_bytes()) == pinned.blob:
            continue
        missing.append(pinned)
    if not missing:
        return folder
    if offline():
        raise ModelNotFoundError(f"{release.label} is not in the cache and downloads are off (${ENV_OFFLINE}); " + local_ways(release.name))
    base = (os.environ.get(ENV_HUB_URL) or DEFAULT_HUB_URL).rstrip("/")
    if not base.startswith(("https://", "http://")):
        raise ModelNotFoundError(f"${ENV_HUB_URL} must be an http(s) URL, got {base!r}")
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    progress_log.info("fetching %s (%s, pinned commits) into %s", release.label, ", ".join(p.file for p in missing), folder)
    for pinned in missing:
        url = f"{base}/{releases.REPOSITORY}/raw/{pinned.commit}/{pinned.file}"
        try:
            data = download(url, MAX_PTH_BYTES, expected_blob=pinned.blob, progress=progress)
        except ModelNotFoundError as exc:
            raise ModelNotFoundError(f"{exc}; the next run fetches it again") from None
        except (urllib.error.URLError, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ModelNotFoundError(f"cannot fetch {release.label} from {base} ({reason}); " + local_ways(release.name)) from None
        write_atomic(folder / pinned.file, data)  # named only now, verified
    return folder


def bundle_for_name(model: str, *, progress=None) -> Path:
    """The cached bundle of a TAE release ("taesd", "taesd@1.2"), fetched and built on first use; concurrent
    first uses wait for one build."""
    release = releases.lookup(model)
    bundle = _checked_cache(release.label)
    if (bundle / "manifest.json").is_file():
        return bundle
    with build_lock(release.label):
        if (bundle / "manifest.json").is_file():  # another process built it while we waited
            return bundle
        try:
            space = spaces.by_name(release.space)
        except SdliteError:
            raise ModelNotFoundError(f"{release.label} is a model of latent space {release.space}, which this sdlite cannot build yet") from None
        folder = fetch_release(release, progress=progress)
        origin = {"kind": "release", "model": f"{releases.REPOSITORY}", "release": release.label,
                  "encoder": {"file": release.encoder.file, "commit": release.encoder.commit, "git_blob": release.encoder.blob},
                  "decoder": {"file": release.decoder.file, "commit": release.decoder.commit, "git_blob": release.decoder.blob}}
        progress_log.info("building the ONNX bundle %s from %s (numpy + onnx, once)", bundle, release.label)
        try:
            tae.build_from_pth_pair(folder / release.encoder.file, folder / release.decoder.file, space, bundle, origin=origin,
                                    described=release.label)
        except (OSError, ValueError) as exc:
            raise ModelNotFoundError(f"cannot build {release.label} into {bundle}: {type(exc).__name__}: {exc}"[:400]) from None
    return bundle


def bundle_for_folder(folder: Path, *, latent_space: str | None = None) -> Path:
    """The cached bundle of a local AutoencoderTiny folder, built on first use (keyed by the weights' hash,
    so a changed folder gets a new bundle)."""
    weights = Path(folder) / tae.WEIGHTS_FILE
    tae.read_regular_size_check(weights)  # an oversized file is refused before it is hashed
    digest = _weights_digest(weights)[:16]
    config = tae.read_config(Path(folder))
    space = tae.resolve_space(Path(folder), config, latent_space)
    return _built_once(f"{space.name}-{digest}", folder, lambda bundle: tae.build_bundle(Path(folder), bundle, latent_space=space.name))


def bundle_for_pth_folder(folder: Path, *, latent_space: str | None = None) -> Path:
    """The cached bundle of a folder of published .pth files (NAME_encoder.pth + NAME_decoder.pth), built on
    first use without torch and keyed by both files' hashes."""
    pair = tae.pth_files(Path(folder))
    if pair is None:
        raise ModelNotFoundError(f"{folder} does not hold one NAME_encoder.pth and NAME_decoder.pth pair")
    for path in pair:
        tae.read_regular_size_check(path)  # an oversized file is refused before it is hashed
    digest = hashlib.sha256("".join(_weights_digest(p) for p in pair).encode()).hexdigest()[:16]
    name = f"{pair[0].name[: -len(tae.PTH_SUFFIXES[0])]}-pth-{digest}"
    return _built_once(name, folder, lambda bundle: tae.build_from_pth(Path(folder), bundle, latent_space=latent_space))


def _built_once(name: str, source, build) -> Path:
    """The cache's bundle `built/name`, made by build(path) on first use; concurrent first uses wait for one build."""
    bundle = _checked_cache("built", name)
    if not (bundle / "manifest.json").is_file():
        with build_lock(name):
            if not (bundle / "manifest.json").is_file():  # another process built it while we waited
                progress_log.info("building the ONNX bundle %s from %s (numpy + onnx, once)", bundle, source)
                try:
                    build(bundle)
                except SdliteError:
                    raise
                except (OSError, ValueError) as exc:
                    raise ModelNotFoundError(f"cannot build a bundle from {source} into {bundle}: {type(exc).__name__}: {exc}"[:400]) from None
                except ImportError as exc:
                    raise ModelNotFoundError(f"building a TAE bundle needs the onnx package ({exc}); pip install onnx") from None
    return bundle


_DIGESTS_KEPT = 64
_digests: dict[tuple, str] = {}


def _weights_digest(path: Path) -> str:
    """The weights file's sha256, hashed once per version of the file (every load_model(folder) asks)."""
    key = (os.path.realpath(path), file_identity(path))
    if key not in _digests:
        if len(_digests) >= _DIGESTS_KEPT:
            _digests.clear()
        _digests[key] = file_sha256(path)
    return _digests[key]


def forget_digests() -> None:
    _digests.clear()


def cached_bundles() -> list[Path]:
    """Every bundle sdlite fetched or built in the cache (release names and built folders)."""
    root = cache_dir()
    found = []
    for folder in [root / "built"] + [root]:
        if not folder.is_dir():
            continue
        for child in sorted(folder.iterdir()):
            if child.is_dir() and not child.name.startswith(".") and (child / "manifest.json").is_file():
                found.append(child)
    return found


def clear_downloads() -> None:
    """Remove what sdlite fetched and built in the cache (weights, release bundles, built folders), nothing else."""
    root = cache_dir()
    check_owned(root)
    names = set(OWN_FOLDERS) | {r.label for r in releases.RELEASES.values()}
    for name in names:
        target = root / name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target, ignore_errors=True)
