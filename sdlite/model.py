"""A loaded bundle: the VAE encoder, VAE decoder and U-Net calls of the pipeline, on cached sessions.

What a bundle is and where it lives is sdlite.bundle's job; this module only runs it.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from pathlib import Path

import numpy as np

from . import sessions, split
from .sessions import cached, check_settings, file_identity
from .bundle import EXPORT_HINT, MODEL_FILE, ONNX_DTYPES, SCHEDULER_CONFIG, UNCOND_FILE, check_extra, check_files, read_bundle
from .files import read_json
from .registry import resolve_model_path
from .errors import BundleError, ModelNotFoundError, OptionError, SdliteError
from .logs import progress_log
from .scheduler import DEFAULT_STEPS, DEFAULT_STRENGTH, DDIM
from .tiling import DEFAULT_TILE, check_tile, run_tiled

log = logging.getLogger("sdlite")

__all__ = ["Model", "load_model", "feed_inputs"]


def feed_inputs(session, values: dict[str, np.ndarray]) -> dict:
    """Match `values` to the session's inputs by name, in the dtype each input declares."""
    feed = {}
    for spec in session.get_inputs():
        if spec.name not in values:
            raise SdliteError(f"model input {spec.name!r} is not one sdlite provides ({', '.join(values)})")
        feed[spec.name] = np.asarray(values[spec.name], dtype=ONNX_DTYPES.get(spec.type, np.float32))
    return feed


def _run(session, component: str, outputs: list[str], feed: dict) -> list:
    """session.run, with onnxruntime's own errors (a graph that fails on this input, an allocation that
    fails) turned into SdliteError naming the component."""
    try:
        return session.run(outputs, feed)
    except SdliteError:
        raise
    except Exception as exc:
        text = str(exc).strip().splitlines()
        raise SdliteError(f"onnxruntime failed running the {component}: {type(exc).__name__}: {text[0] if text else ''}") from None


_NO_SPLIT = object()  # cached: this network has nothing to split


def _needs_tiles(array: np.ndarray, cell: int, tile: int | None) -> bool:
    return tile is not None and max(array.shape[2], array.shape[3]) // cell > tile


def _checked(output, component: str, expected: tuple) -> np.ndarray:
    """A network's output as float32, checked against the shape sdlite expects (None: any size)."""
    array = np.asarray(output)
    if array.ndim != len(expected) or any(e is not None and e != a for e, a in zip(expected, array.shape)):
        shape = tuple("?" if e is None else e for e in expected)
        raise SdliteError(f"the {component} returned shape {array.shape}, sdlite expects {shape}: the bundle is not a VAE of this kind")
    if not np.issubdtype(array.dtype, np.floating):
        raise SdliteError(f"the {component} returned {array.dtype} values, sdlite expects floats")
    return array.astype(np.float32, copy=False)


class Model:
    """A loaded bundle. Sessions are created on first use and shared process-wide.

    providers: onnxruntime providers (default CUDA if available, else CPU); threads: intra-op threads;
    strict: raise instead of warning when CUDA was requested but did not attach; session_overrides: a mapping of
    component name -> your own InferenceSession to use instead; verify: check each component's files
    against the sha256 its manifest records before building its session (sizes are always checked);
    session_settings: onnxruntime session settings for every session built here, over sdlite's per-component
    defaults (sdlite.sessions.SESSION_SETTINGS names them, e.g. {"cpu_mem_arena": True}).
    """

    def __init__(self, path, *, providers=None, threads: int | None = None, strict: bool = False, session_overrides=None,
                 verify: bool = True, session_settings: dict | None = None):
        self.session_settings = check_settings(session_settings)
        self.info = read_bundle(Path(path))
        self.path = self.info.path
        self.providers = providers
        self.threads = threads
        self.strict = strict
        self.verify = verify
        self._sessions = dict(session_overrides or {})
        self._overridden = set(self._sessions)  # a caller's own sessions: run as given, never split
        self._locks = {name: threading.Lock() for name in self.info.components | frozenset(self._sessions)}
        self._uncond = None
        self._scheduler = None
        self.components = self.info.components | frozenset(self._sessions)
        for component in self.info.components - frozenset(self._sessions):
            check_files(self.info, component, hashes=False)  # sizes now: a truncated file is found at once

    # what the bundle says about itself
    model_id = property(lambda self: self.info.model_id)
    latent_space = property(lambda self: self.info.latent_space)
    latent_space_id = property(lambda self: self.info.latent_space_id)
    latent_space_name = property(lambda self: self.info.latent_space_name)
    scaling_factor = property(lambda self: self.info.scaling_factor)
    shift_factor = property(lambda self: self.info.shift_factor)
    latent_channels = property(lambda self: self.info.latent_channels)
    downsample_factor = property(lambda self: self.info.downsample_factor)
    manifest = property(lambda self: self.info.manifest)

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, id={self.model_id}, latent space {self.info.latent_space_name}, components={sorted(self.components)})"

    @property
    def has_unet(self) -> bool:
        return "unet" in self.components

    def session(self, component: str):
        if component not in self.components:
            raise ModelNotFoundError(
                f"bundle {self.path} has no {component} (it has: {', '.join(sorted(self.components))}); {EXPORT_HINT}"
            )
        session = self._sessions.get(component)
        if session is None:
            with self._locks[component]:  # one lock per component: the decoder never waits for a U-Net build
                session = self._sessions.get(component)
                if session is None:
                    session = self._build(component)
                    self._sessions[component] = session
        return session

    def _build(self, component: str):
        path = self.path / self.info.component_files.get(component, f"{component}/{MODEL_FILE}")
        if not path.is_file():
            raise ModelNotFoundError(f"bundle {self.path} lacks {path.name} for {component} ({path}); {EXPORT_HINT}")
        check_files(self.info, component, hashes=self.verify)
        try:
            return sessions.cached_session(str(path), self.providers, threads=self.threads, strict=self.strict,
                                           settings=self.session_settings)
        except SdliteError:
            raise
        except Exception as exc:  # onnxruntime raises its own types for unreadable graphs
            raise SdliteError(f"onnxruntime cannot load {path}: {exc}") from exc

    def _split_sessions(self, component: str):
        """(head, tail) sessions of a network with whole-map statistics (sdlite.split), or None for any other."""
        if component in self._overridden:
            return None
        path = self.path / self.info.component_files.get(component, f"{component}/{MODEL_FILE}")
        self.session(component)  # checks the file (hashes) and fails as usual when it is missing
        found = sessions.cached(("split", os.path.realpath(path), sessions.file_identity(path), component),
                                lambda: split.split_for_tiles(path, component) or _NO_SPLIT)
        if found is _NO_SPLIT:
            return None
        return tuple(sessions.cached_session(str(path), self.providers, threads=self.threads, strict=self.strict,
                                             settings=self.session_settings, part=f"{component}:{part}",
                                             make_part=lambda part=part: getattr(found, part))
                     for part in ("head", "tail"))

    def encode(self, pixels: np.ndarray, *, tile: int | None = DEFAULT_TILE) -> np.ndarray:
        """(1, 3, H, W) in [-1, 1], sides multiples of downsample_factor -> raw latent mean (1, C, H/f, W/f)
        float32. Images over `tile` latent cells a side are encoded by overlapping tiles (None: never); an
        encoder with whole-map statistics (TAEF2) tiles only its layers before them (sdlite.split)."""
        check_tile(tile)
        session = self.session("vae_encoder")
        name = session.get_inputs()[0].name
        outputs = [o.name for o in session.get_outputs()]
        wanted = "latent_parameters" if "latent_parameters" in outputs else outputs[0]
        f = self.downsample_factor

        def checked(params, batch, height, width):
            params = _checked(params, "vae_encoder", (batch, None, height // f, width // f))
            if params.shape[1] < self.latent_channels:
                raise SdliteError(f"the vae_encoder returned {params.shape[1]} channels, the bundle declares {self.latent_channels} latent channels")
            return params[:, : self.latent_channels]

        def encoder(piece):
            (params,) = _run(session, "vae_encoder", [wanted], {name: piece.astype(np.float32)})
            return checked(params, *piece.shape[:1], *piece.shape[2:])

        if not _needs_tiles(pixels, f, tile):
            return encoder(pixels)
        parts = self._split_sessions("vae_encoder")
        if parts is None:
            return run_tiled(encoder, pixels, cell_in=f, cell_out=1, tile=tile)
        head, tail = parts

        def features(piece):
            (out,) = _run(head, "vae_encoder", [head.get_outputs()[0].name], {head.get_inputs()[0].name: piece.astype(np.float32)})
            return _checked(out, "vae_encoder", (piece.shape[0], None, piece.shape[2] // f, piece.shape[3] // f))

        mapped = run_tiled(features, pixels, cell_in=f, cell_out=1, tile=tile)
        (params,) = _run(tail, "vae_encoder", [tail.get_outputs()[0].name], {tail.get_inputs()[0].name: mapped})
        return checked(params, *pixels.shape[:1], *pixels.shape[2:])

    def decode(self, latents: np.ndarray, *, tile: int | None = DEFAULT_TILE) -> np.ndarray:
        """Raw latents (1, C, h, w) -> (1, 3, h*f, w*f) float32 in about [-1, 1]. Latents over `tile`
        cells a side are decoded by overlapping tiles (None: never)."""
        check_tile(tile)
        session = self.session("vae_decoder")
        name = session.get_inputs()[0].name

        f = self.downsample_factor

        def decoder(piece):
            (sample,) = _run(session, "vae_decoder", [session.get_outputs()[0].name], {name: piece.astype(np.float32)})
            batch, _, height, width = piece.shape
            return _checked(sample, "vae_decoder", (batch, 3, height * f, width * f))

        parts = self._split_sessions("vae_decoder") if _needs_tiles(latents, 1, tile) else None
        if parts is None:
            return run_tiled(decoder, latents, cell_in=1, cell_out=f, tile=tile)
        head, tail = parts  # the layers with whole-map statistics run on the whole latent; the rest by tiles
        (mapped,) = _run(head, "vae_decoder", [head.get_outputs()[0].name], {head.get_inputs()[0].name: latents.astype(np.float32)})
        mapped = _checked(mapped, "vae_decoder", (latents.shape[0], None, latents.shape[2], latents.shape[3]))

        def rest(piece):
            (sample,) = _run(tail, "vae_decoder", [tail.get_outputs()[0].name], {tail.get_inputs()[0].name: piece})
            return _checked(sample, "vae_decoder", (piece.shape[0], 3, piece.shape[2] * f, piece.shape[3] * f))

        return run_tiled(rest, mapped, cell_in=1, cell_out=f, tile=tile)

    @property
    def uncond_embedding(self) -> np.ndarray:
        if self._uncond is None:
            name = (self.manifest or {}).get("uncond_embedding") or UNCOND_FILE
            if not (self.path / name).is_file():
                raise ModelNotFoundError(f"bundle {self.path} has a U-Net but no {name}; {EXPORT_HINT}")
            path = check_extra(self.info, name, hashes=self.verify)
            try:
                embedding = np.load(path, allow_pickle=False)
            except Exception as exc:  # numpy raises ValueError, EOFError, ... on a damaged .npy
                raise BundleError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
            if embedding.ndim != 3 or embedding.shape[0] != 1 or not np.issubdtype(embedding.dtype, np.floating) or not np.isfinite(embedding).all():
                raise BundleError(f"{path} must hold one finite text embedding of shape (1, tokens, width), got {embedding.dtype} {embedding.shape}")
            self._uncond = embedding.astype(np.float32)
        return self._uncond

    @property
    def scheduler(self) -> DDIM:
        if self._scheduler is None:
            name = (self.manifest or {}).get("scheduler") or SCHEDULER_CONFIG
            config = {}
            if (self.path / name).is_file():
                config = read_json(check_extra(self.info, name, hashes=self.verify))
            try:
                self._scheduler = DDIM.from_config(config)
            except OptionError as exc:
                raise BundleError(f"{self.path / name}: {exc}") from None
        return self._scheduler

    @functools.cached_property
    def unet_multiple(self) -> int:
        """Latent sides the U-Net accepts are multiples of this (2 ** downsampling blocks - 1)."""
        path = self.path / "unet" / "config.json"
        config = read_json(path) if path.is_file() else {}
        blocks = config.get("block_out_channels", (0, 0, 0, 0))
        if not isinstance(blocks, (list, tuple)) or not 1 <= len(blocks) <= 7:
            raise BundleError(f"{path}: block_out_channels must be a list of 1 to 7 entries, got {blocks!r}")
        return 2 ** (len(blocks) - 1)

    def denoise(
        self, latents: np.ndarray, *, strength: float = DEFAULT_STRENGTH, steps: int = DEFAULT_STEPS, seed: int = 0,
        tile: int | None = DEFAULT_TILE, progress=None,
    ) -> np.ndarray:
        """A few DDIM steps with the U-Net and the empty-prompt embedding; raw latents in and out. Latents
        over `tile` cells a side get the U-Net's noise prediction by overlapping tiles (None: never)."""
        multiple = self.unet_multiple
        check_tile(tile, multiple)
        timesteps = self.scheduler.timesteps(strength, steps)  # validates the options before any work
        session = self.session("unet")
        shift = float(self.shift_factor or 0.0)
        height, width = latents.shape[-2:]
        pad = ((0, 0), (0, 0), (0, (-height) % multiple), (0, (-width) % multiple))
        sample = np.pad((latents - shift) * self.scaling_factor, pad, mode="edge")
        noise = np.random.default_rng(seed).standard_normal(sample.shape).astype(np.float32)
        sample = self.scheduler.add_noise(sample, timesteps[0], noise)
        names = [i.name for i in session.get_inputs()]
        text_name = "encoder_hidden_states" if "encoder_hidden_states" in names else names[-1]
        for i, t in enumerate(timesteps):

            def unet(piece, t=t):
                feed = feed_inputs(session, {names[0]: piece, "timestep": np.array(t, dtype=np.float32), text_name: self.uncond_embedding})
                (output,) = _run(session, "unet", [session.get_outputs()[0].name], feed)
                return _checked(output, "unet", piece.shape)

            output = run_tiled(unet, sample, cell_in=1, cell_out=1, tile=tile, multiple=multiple)
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            sample = self.scheduler.step(output, t, t_prev, sample)
            progress_log.info("U-Net step %d of %d", i + 1, len(timesteps))
            if progress:
                progress(i + 1, len(timesteps))
        return (sample[..., :height, :width] / self.scaling_factor + shift).astype(np.float32)


def load_model(model=None, *, providers=None, threads: int | None = None, strict: bool = False, session_overrides=None,
               verify: bool = True, session_settings: dict | None = None) -> Model:
    """A Model from a Model (returned as is), a bundle path or name, or None (see
    sdlite.registry.resolve_model_path). Loaded models live in sdlite.sessions' one cache, keyed by the
    bundle's path and its manifest's identity (a re-export into the same folder is loaded afresh),
    providers, threads, strict, verify and session_settings; sdlite.clear_cache() empties it.
    session_settings: onnxruntime session settings over sdlite's defaults (see Model)."""
    if isinstance(model, Model):
        return model
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise OptionError(f"model must be a bundle path or name, a TAE name, a loaded sdlite.Model or None, got {type(model).__name__} {model!r}"[:200])
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise OptionError(f"threads must be a positive integer, got {threads!r}")
    path = resolve_model_path(model)
    if session_overrides:
        return Model(path, providers=providers, threads=threads, strict=strict, session_overrides=session_overrides, verify=verify,
                     session_settings=session_settings)
    marker = path / "manifest.json" if (path / "manifest.json").is_file() else path / "vae_decoder" / MODEL_FILE
    if not marker.is_file():
        marker = path / "vae_encoder" / MODEL_FILE
    settings = check_settings(session_settings)
    key = ("model", str(path.resolve()), file_identity(marker), repr(providers), threads, strict, verify,
           tuple(sorted((settings or {}).items())))
    return cached(key, lambda: Model(path, providers=providers, threads=threads, strict=strict, verify=verify, session_settings=settings))
