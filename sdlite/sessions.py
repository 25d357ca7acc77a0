"""onnxruntime sessions: provider choice, lazy creation, and a process-wide cache.

Sessions are keyed by (model file and its identity, providers, thread count, session settings) so that
every Model pointing at the same file shares one session, and a file replaced in place (a re-export into
the same folder) gets a new one. onnxruntime's InferenceSession.run is thread-safe.
Creation is guarded by one lock per key, so a thread building a slow session does not hold up
threads that want other sessions. Whether CUDA attached is checked on every request, cached or not,
so a strict request after a lenient one of the same file still raises.
"""

from __future__ import annotations

import logging
import os
import threading
import warnings

from .errors import OptionError, ProviderError

log = logging.getLogger("sdlite")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"

_cache: dict[tuple, object] = {}
_key_locks: dict[tuple, threading.Lock] = {}
_lock = threading.Lock()  # guards the two dicts, never held while a session is built


def default_providers() -> list[str]:
    """CUDA (with CPU fallback) when onnxruntime offers it, else CPU."""
    import onnxruntime as ort

    return [CUDA, CPU] if CUDA in ort.get_available_providers() else [CPU]


def resolve_providers(providers) -> list:
    if providers is None:
        return default_providers()
    if isinstance(providers, str):
        return [providers]
    return list(providers)


def _provider_name(provider) -> str:
    return provider[0] if isinstance(provider, tuple) else provider


def check_attached(session, wanted, path: str, *, strict: bool, warn: bool = True) -> None:
    """Warn (or raise ProviderError when strict) if CUDA was requested for `path` but did not attach."""
    if CUDA not in [_provider_name(p) for p in wanted]:
        return
    attached = session.get_providers()
    if CUDA not in attached:
        message = f"CUDAExecutionProvider was requested for {os.path.basename(path)} but did not attach; running on {attached}"
        if strict:
            raise ProviderError(message)
        if warn:
            warnings.warn(message, RuntimeWarning, stacklevel=4)


SESSION_SETTINGS = {
    "cpu_mem_arena": True,  # onnxruntime's CPU arena: freed blocks are kept for reuse
    "mem_pattern": True,  # pre-planned activation buffers
    "prepacking": True,  # weights repacked for the GEMM kernels (a second copy of each)
    "layout_optimization": True,  # ORT_ENABLE_ALL: CPU layout rewrites (NCHWc convolutions), done at every load
}
"""onnxruntime's session knobs, with onnxruntime's defaults (BENCHMARKS.md measures each)."""

LARGE_NETWORK_BYTES = 20_000_000
"""Model files from this size up count as large networks: SD's VAE (137 and 198 MB; int8 copies 35 and 50 MB,
whose peak RSS the arena raised from 775 to 1232 MB for the encoder); TAESD and VAElight are 1-5 MB."""

COMPONENT_SETTINGS = {
    # Large VAEs run without the CPU arena: measured on SD 1.5's (BENCHMARKS.md), their peak RSS drops by
    # 29-43 % at the same speed. Small ones keep it: TAESD's and VAElight's decoders ran 17-50 % slower
    # without it, for memory that is small anyway.
    "vae_encoder": {"cpu_mem_arena": False},
    "vae_decoder": {"cpu_mem_arena": False},
    # The U-Net keeps the arena (25 % slower without). Its layout rewrites took 10 s of every 12-15 s session
    # build for no measurable speed-up (plain and fused graphs alike), so it stops at ORT_ENABLE_EXTENDED.
    "unet": {"layout_optimization": False},
}
"""sdlite's defaults per bundle component (the folder that holds the model file), over SESSION_SETTINGS;
the arena setting applies to large networks only (LARGE_NETWORK_BYTES)."""


def default_settings(path) -> dict:
    """The session settings sdlite uses for a model file: its component's defaults over onnxruntime's."""
    path = os.path.abspath(str(path))
    chosen = dict(SESSION_SETTINGS, **COMPONENT_SETTINGS.get(os.path.basename(os.path.dirname(path)), {}))
    if not chosen["cpu_mem_arena"] and not _is_large(path):
        chosen["cpu_mem_arena"] = True
    return chosen


def _is_large(path: str) -> bool:
    """By the file's size with its external weights (model.onnx.data), when it has them."""
    sizes = [os.path.getsize(p) for p in (path, path + ".data") if os.path.isfile(p)]
    return sum(sizes) >= LARGE_NETWORK_BYTES


def check_settings(settings) -> dict | None:
    """A caller's session settings, checked: None, or a dict of SESSION_SETTINGS names to booleans."""
    if settings is None:
        return None
    if not isinstance(settings, dict):
        raise OptionError(f"session settings must be a dict of names to True/False, got {settings!r}")
    unknown = sorted(set(settings) - set(SESSION_SETTINGS))
    if unknown:
        raise OptionError(f"unknown session settings {unknown}; known: {', '.join(SESSION_SETTINGS)}")
    wrong = [name for name, value in settings.items() if not isinstance(value, bool)]
    if wrong:
        raise OptionError(f"session settings take True or False, got {', '.join(f'{n}={settings[n]!r}' for n in wrong)}")
    return dict(settings)


def _settings_for(path, settings: dict | None) -> dict:
    return dict(default_settings(path), **(settings or {}))  # session_options rejects unknown names


def session_options(threads: int | None = None, settings: dict | None = None):
    """SessionOptions for sdlite: the given settings (SESSION_SETTINGS keys; missing ones take onnxruntime's
    defaults) and intra-op threads when given."""
    import onnxruntime as ort

    chosen = dict(SESSION_SETTINGS, **(check_settings(settings) or {}))
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if chosen["layout_optimization"]
                                        else ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED)
    options.enable_cpu_mem_arena = bool(chosen["cpu_mem_arena"])
    options.enable_mem_pattern = bool(chosen["mem_pattern"])
    if not chosen["prepacking"]:
        options.add_session_config_entry("session.disable_prepacking", "1")
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return options


def create_session(path: str, providers=None, *, threads: int | None = None, strict: bool = False, settings: dict | None = None,
                   model_bytes: bytes | None = None):
    """A new InferenceSession; warns (or raises when strict) if a requested CUDA provider did not attach.
    settings: overrides of default_settings(path), e.g. {"cpu_mem_arena": True}. model_bytes: a graph derived
    from the file at path (sdlite.split), run instead of it."""
    import onnxruntime as ort

    wanted = resolve_providers(providers)
    options = session_options(threads, _settings_for(path, settings))
    log.debug("creating session for %s with %s", path, wanted)
    session = ort.InferenceSession(model_bytes if model_bytes is not None else str(path), sess_options=options, providers=wanted)
    check_attached(session, wanted, path, strict=strict)
    return session


def file_identity(path) -> tuple | None:
    """What tells a file from its replacement: device, inode, size and modification time (None: unreadable)."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return (status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns)


def cached(key: tuple, build):
    """The one process-wide cache (sessions and loaded models): the value for `key`, built by build() on
    first use. One lock per key, so a slow build does not hold up other keys."""
    with _lock:
        value = _cache.get(key)
        key_lock = _key_locks.setdefault(key, threading.Lock())
    if value is not None:
        return value
    with key_lock:
        with _lock:
            value = _cache.get(key)
        if value is None:  # nobody built it while this thread waited for the key
            value = build()
            with _lock:
                _cache[key] = value
    return value


def cached_session(path: str, providers=None, *, threads: int | None = None, strict: bool = False, settings: dict | None = None,
                   part: str | None = None, make_part=None):
    """The shared session for (path and its identity, providers, threads, session settings), created on first use.
    part/make_part: a session of a graph derived from the file (make_part() gives its bytes), cached under its name."""
    wanted = resolve_providers(providers)
    chosen = _settings_for(path, settings)
    key = ("session", os.path.realpath(path), file_identity(path), part, tuple(map(str, wanted)), threads, tuple(sorted(chosen.items())))
    built = []

    def build():
        built.append(True)
        extra = {"model_bytes": make_part()} if make_part is not None else {}
        return create_session(path, wanted, threads=threads, strict=strict, settings=chosen, **extra)

    session = cached(key, build)
    if not built:
        check_attached(session, wanted, path, strict=strict, warn=False)  # the builder already warned
    return session


_forgetters: list = []


def on_clear(forget) -> None:
    """Register a function that clear_cache() calls: the modules that keep process-wide state (the entropy
    coder's last plan, fetched weights' digests, warned decoder pairs) register theirs."""
    _forgetters.append(forget)


def clear_cache() -> None:
    """Drop every cached session and loaded model and every piece of process-wide state sdlite keeps (frees
    their memory once nothing else holds them)."""
    with _lock:
        _cache.clear()
        _key_locks.clear()
    for forget in _forgetters:
        forget()
