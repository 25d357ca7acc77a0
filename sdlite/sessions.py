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
OPENVINO = "OpenVINOExecutionProvider"
PROVIDER_ALIASES = {"cpu": CPU, "cuda": CUDA, "openvino": OPENVINO}
"""Short names accepted wherever providers are (any case): `--providers openvino`; `openvino:f32` (any of
OPENVINO_PRECISIONS after the colon) is ("OpenVINOExecutionProvider", {"precision": "f32"})."""

OPENVINO_PRECISIONS = ("auto", "f32", "bf16", "f16")
OPENVINO_DEFAULTS = {"precision": "auto"}
"""sdlite's OpenVINO options. precision: auto leaves it to OpenVINO (bf16 on CPUs with AMX, f32 elsewhere:
measured on a Xeon with AMX, Kodak, `python -m bench cpu`: TAESD's round trip 5.3x the CPU provider's
speed with pixels 0.55 levels from it on average, the TAESD3 and TAEF2 decoders 5.7x and 5.2x within 0.0001
LPIPS and 0.02 dB, BENCHMARKS.md); f32 gives the CPU provider's pixels (at its speed); choose with
("OpenVINOExecutionProvider", {"precision": "f32"}). Other keys go to the provider as they are (num_streams, ...)."""
OPENVINO_PLUGIN = "onnxruntime-ep-openvino"
_openvino_devices: list = []
_openvino_lock = threading.Lock()

_cache: dict[tuple, object] = {}
_key_locks: dict[tuple, threading.Lock] = {}
_lock = threading.Lock()  # guards the two dicts, never held while a session is built


def default_providers() -> list[str]:
    """CUDA (with CPU fallback) when onnxruntime offers it, else CPU."""
    import onnxruntime as ort

    return [CUDA, CPU] if CUDA in ort.get_available_providers() else [CPU]


def resolve_providers(providers) -> list:
    """None -> default_providers(); a name, alias (PROVIDER_ALIASES) or (name, options) pair, or a list of
    them -> a list with aliases spelled out. Names onnxruntime does not know are an OptionError."""
    if providers is None:
        return default_providers()
    if isinstance(providers, (str, tuple)):
        providers = [providers]
    return [_spelled_out(provider) for provider in providers]


def _spelled_out(provider):
    import onnxruntime as ort

    if isinstance(provider, tuple):
        if len(provider) != 2 or not isinstance(provider[1], dict):
            raise OptionError(f"a provider with options is a (name, dict) pair, got {provider!r}")
        return (_spelled_out(provider[0]), provider[1])
    if not isinstance(provider, str):
        raise OptionError(f"providers are names or (name, options) pairs, got {provider!r}")
    stem, colon, precision = provider.partition(":")
    if colon and PROVIDER_ALIASES.get(stem.lower(), stem) == OPENVINO:  # "openvino:f32", for the command line
        if precision.lower() not in OPENVINO_PRECISIONS:
            raise OptionError(f"unknown OpenVINO precision {precision!r} in {provider!r}; choose one of: {', '.join(OPENVINO_PRECISIONS)}")
        return (OPENVINO, {"precision": precision.lower()})
    name = PROVIDER_ALIASES.get(provider.lower(), provider)
    known = set(ort.get_all_providers()) | {OPENVINO}
    if name not in known:
        raise OptionError(f"unknown provider {provider!r}; choose one of: {', '.join(PROVIDER_ALIASES)} or an onnxruntime "
                          f"provider name (available here: {', '.join(ort.get_available_providers())})")
    return name


def check_providers(providers) -> list:
    """resolve_providers, and a plugin provider (OpenVINO) loaded now: a clear ProviderError before any work."""
    import onnxruntime as ort

    wanted = resolve_providers(providers)
    if OPENVINO in [_provider_name(p) for p in wanted] and (_openvino_devices or OPENVINO not in ort.get_available_providers()):
        _openvino_plugin_devices()
    return wanted


def _provider_name(provider) -> str:
    return provider[0] if isinstance(provider, tuple) else provider


def _openvino_plugin_devices() -> list:
    """The OpenVINO plugin's CPU device, registered with onnxruntime once per process; a one-line
    ProviderError when the plugin is missing, does not load, or offers no CPU device here."""
    import onnxruntime as ort

    with _openvino_lock:
        if _openvino_devices:
            return _openvino_devices
        try:
            import onnxruntime_ep_openvino as plugin
        except ImportError:
            raise ProviderError(f"{OPENVINO} needs its plugin, which is not installed: pip install 'sdlite[openvino]' "
                                f"(the {OPENVINO_PLUGIN} package)") from None
        if not hasattr(ort, "register_execution_provider_library"):
            raise ProviderError(f"{OPENVINO} as a plugin needs onnxruntime >= 1.23 (this is {ort.__version__}): "
                                f"pip install -U onnxruntime")
        try:
            ort.register_execution_provider_library("sdlite-openvino", plugin.get_library_path())
        except Exception as exc:  # onnxruntime raises its own types; the message is all a caller can act on
            raise ProviderError(f"the {OPENVINO_PLUGIN} plugin did not load into onnxruntime {ort.__version__}: "
                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}") from exc
        devices = [d for d in ort.get_ep_devices() if d.ep_name == OPENVINO and d.ep_metadata.get("ov_device") == "CPU"]
        if not devices:
            raise ProviderError(f"the {OPENVINO_PLUGIN} plugin loaded but offers no CPU device on this machine "
                                f"({_cpu_name()}); its device discovery admits Intel processors only: use {CPU}")
        _openvino_devices.extend(devices[:1])
        return _openvino_devices


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or "unknown CPU"


def openvino_options(options: dict | None, threads: int | None) -> dict:
    """The plugin's provider options (strings) from sdlite's: OPENVINO_DEFAULTS under the caller's; the
    precision, intra-op threads and a compiled-model cache under sdlite's cache folder go to OpenVINO's CPU
    device through load_config (INFERENCE_PRECISION_HINT, INFERENCE_NUM_THREADS, CACHE_DIR)."""
    import json

    chosen = dict(OPENVINO_DEFAULTS, **(options or {}))
    precision = str(chosen.pop("precision")).lower()
    if precision not in OPENVINO_PRECISIONS:
        raise OptionError(f"unknown OpenVINO precision {precision!r}; choose one of: {', '.join(OPENVINO_PRECISIONS)}")
    try:
        given = json.loads(chosen.get("load_config") or "{}")
    except ValueError as exc:
        raise OptionError(f"OpenVINO load_config must be JSON: {exc}") from None
    cpu = {} if precision == "auto" else {"INFERENCE_PRECISION_HINT": precision}
    if threads:
        cpu["INFERENCE_NUM_THREADS"] = str(int(threads))
    if "cache_dir" in chosen:
        cpu["CACHE_DIR"] = str(chosen.pop("cache_dir"))
    else:
        from .verified import cache_dir, default_cache_dir

        cpu["CACHE_DIR"] = str((cache_dir() or default_cache_dir()) / "openvino")
    chosen["load_config"] = json.dumps({**given, "CPU": {**cpu, **(given.get("CPU") or {})}})
    return {str(key): str(value) for key, value in chosen.items()}


def check_attached(session, wanted, path: str, *, strict: bool, warn: bool = True) -> None:
    """Warn (or raise ProviderError when strict) if CUDA or OpenVINO was requested for `path` but did not attach."""
    requested = [name for name in (CUDA, OPENVINO) if name in [_provider_name(p) for p in wanted]]
    if not requested:
        return
    attached = session.get_providers()
    missing = [name for name in requested if name not in attached]
    if not missing:
        return
    message = f"{missing[0]} was requested for {os.path.basename(path)} but did not attach; running on {attached}"
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
    """A new InferenceSession; warns (or raises when strict) if a requested CUDA or OpenVINO provider did not attach.
    settings: overrides of default_settings(path), e.g. {"cpu_mem_arena": True}. model_bytes: a graph derived
    from the file at path (sdlite.split), run instead of it."""
    import onnxruntime as ort

    wanted = resolve_providers(providers)
    options = session_options(threads, _settings_for(path, settings))
    log.debug("creating session for %s with %s", path, wanted)
    model = model_bytes if model_bytes is not None else str(path)
    names = [_provider_name(p) for p in wanted]
    if OPENVINO in names:
        entry = wanted[names.index(OPENVINO)]
        chosen = openvino_options(dict(entry[1]) if isinstance(entry, tuple) else None, threads)
        if not _openvino_devices and OPENVINO in ort.get_available_providers():  # built in (onnxruntime-openvino), no plugin
            wanted = [(OPENVINO, {"device_type": "CPU", **chosen}) if n == OPENVINO else p for n, p in zip(names, wanted)]
        else:  # the plugin package: devices are added to the options, the CPU provider is the fallback
            options.add_provider_for_devices(_openvino_plugin_devices(), chosen)
            session = ort.InferenceSession(model, sess_options=options)
            check_attached(session, [OPENVINO], path, strict=strict)
            return session
    session = ort.InferenceSession(model, sess_options=options, providers=wanted)
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
