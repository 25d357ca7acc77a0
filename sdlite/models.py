"""Model bundles: finding them, reading their manifest (or an optimum folder's config.json), the model
id that bitstreams carry, and the encoder / decoder / U-Net calls on top of cached sessions."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import threading
from pathlib import Path

import numpy as np

from . import sessions
from .errors import ModelNotFoundError, OptionError, SdliteError
from .scheduler import DEFAULT_STEPS, DEFAULT_STRENGTH, DDIM
from .tiling import DEFAULT_TILE, check_tile, run_tiled

log = logging.getLogger("sdlite")

MANIFEST = "manifest.json"
BUNDLE_FORMAT = 1
COMPONENTS = ("vae_encoder", "vae_decoder", "unet")
MODEL_FILE = "model.onnx"
UNCOND_FILE = "uncond.npy"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
ENV_MODEL = "SDLITE_MODEL"
ENV_MODELS_DIR = "SDLITE_MODELS_DIR"
DEFAULT_MODELS_DIR = "models"
EXPORT_HINT = (
    "make one with `python -m export --output models/sd15` (downloads SD 1.5 from the Hugging Face hub), "
    "`python -m export --model PATH --output models/NAME` for a local diffusers folder, or "
    "`python -m export --tiny --output models/tiny` (random weights, offline, for tests)"
)
_HASH_CHUNK = 1 << 20
_ONNX_DTYPES = {"tensor(float16)": np.float16, "tensor(double)": np.float64, "tensor(int64)": np.int64, "tensor(int32)": np.int32}


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def component_files(folder: Path) -> list[Path]:
    """The files that hold a component's graph and weights (model.onnx and its external data)."""
    return sorted(p for p in folder.iterdir() if p.is_file() and (p.name == MODEL_FILE or p.name.startswith(MODEL_FILE + "_") or p.suffix in (".data", ".bin", ".pb")))


def component_digest(file_hashes: list[str]) -> str:
    return hashlib.sha256("\n".join(file_hashes).encode()).hexdigest()


def derive_model_id(encoder_digest: str, decoder_digest: str) -> str:
    """16 hex characters naming a latent space: the VAE encoder and decoder weights' hashes.

    The U-Net is left out on purpose: it refines decoding but does not change what a stream means, so
    a VAE-only bundle and a full bundle of the same VAE read each other's streams."""
    return hashlib.sha256(f"sdlite-model-v1\n{encoder_digest}\n{decoder_digest}".encode()).hexdigest()[:16]


def is_bundle(folder: Path) -> bool:
    return (folder / MANIFEST).is_file() or (folder / "vae_decoder" / MODEL_FILE).is_file()


def models_dir() -> Path:
    return Path(os.environ.get(ENV_MODELS_DIR) or DEFAULT_MODELS_DIR)


def available_models(folder: Path | None = None) -> list[str]:
    folder = folder or models_dir()
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and is_bundle(p))


def resolve_model_path(model: str | os.PathLike | None) -> Path:
    """model: a bundle path, a bundle name under the models folder, or None ($SDLITE_MODEL, then the
    only bundle in the models folder)."""
    if model is None:
        model = os.environ.get(ENV_MODEL) or None
    if model is None:
        names = available_models()
        if len(names) == 1:
            return models_dir() / names[0]
        if not names:
            raise ModelNotFoundError(f"no model bundle found in {models_dir()}/ and ${ENV_MODEL} is not set; {EXPORT_HINT}")
        raise ModelNotFoundError(
            f"several bundles in {models_dir()}/: {', '.join(names)}; choose one with model= / --model or ${ENV_MODEL}"
        )
    path = Path(model)
    if path.is_dir() and is_bundle(path):
        return path
    named = models_dir() / str(model)
    if named.is_dir() and is_bundle(named):
        return named
    known = available_models()
    choices = f" (bundles in {models_dir()}/: {', '.join(known)})" if known else ""
    raise ModelNotFoundError(f"no model bundle at {model!r}{choices}; {EXPORT_HINT}")


class Model:
    """A loaded bundle. Sessions are created on first use and shared process-wide.

    providers: onnxruntime providers (default CUDA if available, else CPU); threads: intra-op threads;
    strict: raise instead of warning when CUDA was requested but did not attach; sessions: a mapping of
    component name -> your own InferenceSession to use instead.
    """

    def __init__(self, path, *, providers=None, threads: int | None = None, strict: bool = False, sessions_=None):
        self.path = Path(path)
        if not is_bundle(self.path):
            raise ModelNotFoundError(f"{self.path} is not a model bundle; {EXPORT_HINT}")
        self.providers = providers
        self.threads = threads
        self.strict = strict
        self._sessions = dict(sessions_ or {})
        self._lock = threading.Lock()
        self._uncond = None
        self._scheduler = None
        manifest_path = self.path / MANIFEST
        if manifest_path.is_file():
            try:
                self.manifest = json.loads(manifest_path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise SdliteError(f"cannot read {manifest_path}: {exc}") from None
            if self.manifest.get("bundle_format") != BUNDLE_FORMAT:
                raise SdliteError(
                    f"{manifest_path} has bundle_format {self.manifest.get('bundle_format')}; this sdlite reads {BUNDLE_FORMAT}"
                )
            self.model_id = self.manifest["model_id"]
            self.scaling_factor = float(self.manifest["scaling_factor"])
            self.shift_factor = self.manifest.get("shift_factor")
            self.latent_channels = int(self.manifest["latent_channels"])
            self.downsample_factor = int(self.manifest["downsample_factor"])
            present = set(self.manifest["components"])
        else:
            self.manifest = None
            config = self._read_config()
            self.scaling_factor = float(config.get("scaling_factor", 0.18215))
            self.shift_factor = config.get("shift_factor")
            self.latent_channels = int(config.get("latent_channels", 4))
            self.downsample_factor = int(config.get("downsample_factor", config.get("upsample_factor", 8)))
            present = {c for c in COMPONENTS if (self.path / c / MODEL_FILE).is_file()}
            self.model_id = self._hash_model_id(present)
        self.components = frozenset(present) | frozenset(self._sessions)

    def _read_config(self) -> dict:
        merged: dict = {}
        for component in ("vae_encoder", "vae_decoder"):
            path = self.path / component / "config.json"
            if path.is_file():
                merged.update(json.loads(path.read_text()))
        if "block_out_channels" in merged and "downsample_factor" not in merged:
            merged["downsample_factor"] = 2 ** (len(merged["block_out_channels"]) - 1)
        return merged

    def _hash_model_id(self, present: set[str]) -> str:
        digests = []
        for component in ("vae_encoder", "vae_decoder"):
            if component not in present:
                digests.append("absent")
                continue
            digests.append(component_digest([file_sha256(p) for p in component_files(self.path / component)]))
        return derive_model_id(*digests)

    def __repr__(self) -> str:
        return f"Model({str(self.path)!r}, id={self.model_id}, components={sorted(self.components)})"

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
            with self._lock:
                session = self._sessions.get(component)
                if session is None:
                    path = self.path / component / MODEL_FILE
                    if self.manifest is not None:
                        path = self.path / self.manifest["components"][component]["file"]
                    if not path.is_file():
                        raise ModelNotFoundError(f"bundle {self.path} lacks {path.name} for {component} ({path}); {EXPORT_HINT}")
                    try:
                        session = sessions.cached_session(str(path), self.providers, threads=self.threads, strict=self.strict)
                    except SdliteError:
                        raise
                    except Exception as exc:  # onnxruntime raises its own types for unreadable graphs
                        raise SdliteError(f"onnxruntime cannot load {path}: {exc}") from exc
                    self._sessions[component] = session
        return session

    @staticmethod
    def _feed(session, values: dict[str, np.ndarray]) -> dict:
        feed = {}
        for spec in session.get_inputs():
            if spec.name not in values:
                raise SdliteError(f"model input {spec.name!r} is not one sdlite provides ({', '.join(values)})")
            dtype = _ONNX_DTYPES.get(spec.type, np.float32)
            feed[spec.name] = np.asarray(values[spec.name], dtype=dtype)
        return feed

    def encode(self, pixels: np.ndarray, *, tile: int | None = DEFAULT_TILE) -> np.ndarray:
        """(1, 3, H, W) in [-1, 1], sides multiples of downsample_factor -> raw latent mean (1, C, H/f, W/f)
        float32. Images over `tile` latent cells a side are encoded by overlapping tiles (None: never)."""
        check_tile(tile)
        session = self.session("vae_encoder")
        name = session.get_inputs()[0].name
        outputs = [o.name for o in session.get_outputs()]
        wanted = "latent_parameters" if "latent_parameters" in outputs else outputs[0]

        def run(piece):
            (params,) = session.run([wanted], {name: piece.astype(np.float32)})
            return np.asarray(params[:, : self.latent_channels], dtype=np.float32)

        return run_tiled(run, pixels, cell_in=self.downsample_factor, cell_out=1, tile=tile)

    def decode(self, latents: np.ndarray, *, tile: int | None = DEFAULT_TILE) -> np.ndarray:
        """Raw latents (1, C, h, w) -> (1, 3, h*f, w*f) float32 in about [-1, 1]. Latents over `tile`
        cells a side are decoded by overlapping tiles (None: never)."""
        check_tile(tile)
        session = self.session("vae_decoder")
        name = session.get_inputs()[0].name

        def run(piece):
            (sample,) = session.run([session.get_outputs()[0].name], {name: piece.astype(np.float32)})
            return np.asarray(sample, dtype=np.float32)

        return run_tiled(run, latents, cell_in=1, cell_out=self.downsample_factor, tile=tile)

    @property
    def uncond_embedding(self) -> np.ndarray:
        if self._uncond is None:
            name = (self.manifest or {}).get("uncond_embedding", UNCOND_FILE)
            path = self.path / name
            if not path.is_file():
                raise ModelNotFoundError(f"bundle {self.path} has a U-Net but no {name}; {EXPORT_HINT}")
            self._uncond = np.load(path, allow_pickle=False).astype(np.float32)
        return self._uncond

    @property
    def scheduler(self) -> DDIM:
        if self._scheduler is None:
            path = self.path / (self.manifest or {}).get("scheduler", SCHEDULER_CONFIG)
            config = json.loads(path.read_text()) if path.is_file() else {}
            self._scheduler = DDIM.from_config(config)
        return self._scheduler

    @functools.cached_property
    def unet_multiple(self) -> int:
        """Latent sides the U-Net accepts are multiples of this (2 ** downsampling blocks - 1)."""
        path = self.path / "unet" / "config.json"
        config = json.loads(path.read_text()) if path.is_file() else {}
        return 2 ** (len(config.get("block_out_channels", (0, 0, 0, 0))) - 1)

    def denoise(
        self, latents: np.ndarray, *, strength: float = DEFAULT_STRENGTH, steps: int = DEFAULT_STEPS, seed: int = 0,
        tile: int | None = DEFAULT_TILE, progress=None,
    ) -> np.ndarray:
        """A few DDIM steps with the U-Net and the empty-prompt embedding; raw latents in and out. Latents
        over `tile` cells a side get the U-Net's noise prediction by overlapping tiles (None: never)."""
        multiple = self.unet_multiple
        check_tile(tile, multiple)
        session = self.session("unet")
        shift = float(self.shift_factor or 0.0)
        height, width = latents.shape[-2:]
        pad = ((0, 0), (0, 0), (0, (-height) % multiple), (0, (-width) % multiple))
        sample = np.pad((latents - shift) * self.scaling_factor, pad, mode="edge")
        timesteps = self.scheduler.timesteps(strength, steps)
        noise = np.random.default_rng(seed).standard_normal(sample.shape).astype(np.float32)
        sample = self.scheduler.add_noise(sample, timesteps[0], noise)
        names = [i.name for i in session.get_inputs()]
        text_name = "encoder_hidden_states" if "encoder_hidden_states" in names else names[-1]
        for i, t in enumerate(timesteps):

            def predict_noise(piece, t=t):
                feed = self._feed(session, {names[0]: piece, "timestep": np.array(t, dtype=np.float32), text_name: self.uncond_embedding})
                (output,) = session.run([session.get_outputs()[0].name], feed)
                return np.asarray(output, dtype=np.float32)

            output = run_tiled(predict_noise, sample, cell_in=1, cell_out=1, tile=tile, multiple=multiple)
            t_prev = timesteps[i + 1] if i + 1 < len(timesteps) else -1
            sample = self.scheduler.step(output, t, t_prev, sample)
            if progress:
                progress(i + 1, len(timesteps))
        return (sample[..., :height, :width] / self.scaling_factor + shift).astype(np.float32)


_loaded: dict[tuple, Model] = {}
_loaded_lock = threading.Lock()


def load_model(model=None, *, providers=None, threads: int | None = None, strict: bool = False, sessions=None) -> Model:
    """A Model from a Model (returned as is), a bundle path or name, or None (see resolve_model_path).

    Loaded models are cached per (path, providers, threads), so repeated calls reuse sessions."""
    if isinstance(model, Model):
        return model
    if threads is not None and threads < 1:
        raise OptionError(f"threads must be a positive integer, got {threads}")
    path = resolve_model_path(model)
    if sessions:
        return Model(path, providers=providers, threads=threads, strict=strict, sessions_=sessions)
    marker = path / MANIFEST if (path / MANIFEST).is_file() else path / "vae_decoder" / MODEL_FILE
    key = (str(path.resolve()), marker.stat().st_mtime_ns, repr(providers), threads, strict)  # a re-export reloads
    with _loaded_lock:
        if key not in _loaded:
            _loaded[key] = Model(path, providers=providers, threads=threads, strict=strict)
        return _loaded[key]
