"""Model bundles on disk: finding them, reading their manifest (or an optimum folder's config.json),
checking their files, and the model id that streams carry. Shared with the export package, which
writes what this module reads. No sessions here: see sdlite.model for running a bundle.

A bundle is a folder with vae_encoder/, vae_decoder/ and optionally unet/ (each model.onnx, maybe
with external data, and config.json), and a manifest.json written by `python -m export`. A plain
optimum-layout folder without a manifest (such as ../shared/models/vaelight) is read from its
config.json files, and its model id is hashed from its ONNX files.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import latent_space as spaces
from . import verified
from .errors import BundleError, ModelNotFoundError

MANIFEST = "manifest.json"
BUNDLE_FORMAT = 1
COMPONENTS = ("vae_encoder", "vae_decoder", "unet")
VAE_COMPONENTS = ("vae_encoder", "vae_decoder")
MODEL_FILE = "model.onnx"
UNCOND_FILE = "uncond.npy"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
ENV_MODEL = "SDLITE_MODEL"
ENV_MODELS_DIR = "SDLITE_MODELS_DIR"
DEFAULT_MODELS_DIR = "models"
EXPORT_HINT = (
    "make one with `python -m export --vae madebyollin/taesd --components vae_encoder vae_decoder --output models/taesd` "
    "(TAESD, 10 MB from the Hugging Face hub), `python -m export --output models/sd15` (SD 1.5, about 4 GB), "
    "`python -m export --model PATH --output models/NAME` for a local diffusers folder, or "
    "`python -m export --tiny --output models/tiny` (random weights, offline, for tests)"
)
ONNX_DTYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}
"""numpy dtype of each ONNX input type sdlite feeds (the export's validation uses the same map)."""
_HASH_CHUNK = 1 << 20


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def component_files(folder: Path) -> list[Path]:
    """The files that hold a component's graph and weights (model.onnx and its external data)."""
    return sorted(
        p for p in folder.iterdir()
        if p.is_file() and (p.name == MODEL_FILE or p.name.startswith(MODEL_FILE + "_") or p.suffix in (".data", ".bin", ".pb"))
    )


def component_digest(file_hashes: list[str]) -> str:
    return hashlib.sha256("\n".join(file_hashes).encode()).hexdigest()


def derive_model_id(encoder_digest: str, decoder_digest: str) -> str:
    """16 hex characters naming a VAE: the hashes of its encoder's and decoder's files.

    The U-Net is left out on purpose: it refines decoding but does not change what a stream means, so
    a VAE-only bundle and a full bundle of the same VAE read each other's streams."""
    return hashlib.sha256(f"sdlite-model-v1\n{encoder_digest}\n{decoder_digest}".encode()).hexdigest()[:16]


def is_bundle(folder: Path) -> bool:
    return (folder / MANIFEST).is_file() or (folder / "vae_decoder" / MODEL_FILE).is_file() or (folder / "vae_encoder" / MODEL_FILE).is_file()


def models_dir() -> Path:
    return Path(os.environ.get(ENV_MODELS_DIR) or DEFAULT_MODELS_DIR)


def available_models(folder: Path | None = None) -> list[str]:
    folder = folder or models_dir()
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and is_bundle(p))


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
    if path.is_dir():
        raise ModelNotFoundError(
            f"{path} is not a model bundle: it has neither {MANIFEST} nor vae_encoder/{MODEL_FILE} / vae_decoder/{MODEL_FILE}; {EXPORT_HINT}"
        )
    known = available_models()
    choices = f" (bundles in {models_dir()}/: {', '.join(known)})" if known else ""
    raise ModelNotFoundError(f"no model bundle at {model!r}{choices}; {EXPORT_HINT}")


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the bundle
    sha256: str | None
    size: int | None


@dataclass(frozen=True)
class BundleInfo:
    """What a bundle says about itself, read without creating any session."""

    path: Path
    model_id: str
    latent_space: spaces.LatentSpace | None  # None: a space sdlite does not know
    scaling_factor: float
    shift_factor: float | None
    latent_channels: int
    downsample_factor: int
    components: frozenset
    component_files: dict = field(default_factory=dict)  # component -> main .onnx path (relative)
    files: dict = field(default_factory=dict)  # component -> [FileEntry] (manifest bundles only)
    manifest: dict | None = None
    quantization: str | None = None

    @property
    def latent_space_id(self) -> int:
        return self.latent_space.id if self.latent_space else spaces.UNKNOWN_ID

    @property
    def latent_space_name(self) -> str:
        return self.latent_space.name if self.latent_space else "unknown"


def _read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BundleError(f"cannot read {path}: {exc}") from None
    if not isinstance(value, dict):
        raise BundleError(f"{path} does not hold a JSON object")
    return value


def _space_from_manifest(manifest: dict, channels: int, factor: int, scaling: float, shift) -> spaces.LatentSpace | None:
    named = manifest.get("latent_space")
    if isinstance(named, dict):
        named = named.get("name")
    if named:
        try:
            space = spaces.by_name(named)
        except Exception:
            return None  # a space a newer sdlite knows: treat it as unknown
        return space
    return spaces.from_config(channels, factor, scaling, shift)


def read_bundle(path: Path) -> BundleInfo:
    """Read a bundle's manifest, or the config.json files of a manifest-less optimum folder."""
    path = Path(path)
    if not is_bundle(path):
        raise ModelNotFoundError(f"{path} is not a model bundle; {EXPORT_HINT}")
    manifest_path = path / MANIFEST
    if manifest_path.is_file():
        manifest = _read_json(manifest_path)
        if manifest.get("bundle_format") != BUNDLE_FORMAT:
            raise BundleError(f"{manifest_path} has bundle_format {manifest.get('bundle_format')!r}; this sdlite reads {BUNDLE_FORMAT}")
        try:
            channels = int(manifest["latent_channels"])
            factor = int(manifest["downsample_factor"])
            scaling = float(manifest["scaling_factor"])
            shift = manifest.get("shift_factor")
            declared = manifest["components"]
            model_id = str(manifest["model_id"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{manifest_path} lacks a valid {exc} entry; re-export the bundle") from None
        main_files, files = {}, {}
        for name, entry in declared.items():
            if name not in COMPONENTS:
                continue
            entry = entry if isinstance(entry, dict) else {}
            main_files[name] = entry.get("file", f"{name}/{MODEL_FILE}")
            files[name] = [FileEntry(f["path"], f.get("sha256"), f.get("size")) for f in entry.get("files", []) if "path" in f]
        return BundleInfo(
            path, model_id, _space_from_manifest(manifest, channels, factor, scaling, shift), scaling,
            None if shift is None else float(shift), channels, factor, frozenset(main_files), main_files, files, manifest,
            manifest.get("quantization"),
        )
    config: dict = {}
    for component in VAE_COMPONENTS:
        config_path = path / component / "config.json"
        if config_path.is_file():
            config.update(_read_json(config_path))
    if "block_out_channels" in config and "downsample_factor" not in config:
        config["downsample_factor"] = 2 ** (len(config["block_out_channels"]) - 1)
    scaling = float(config.get("scaling_factor", 0.18215))
    shift = config.get("shift_factor")
    channels = int(config.get("latent_channels", 4))
    factor = int(config.get("downsample_factor", config.get("upsample_factor", 8)))
    present = frozenset(c for c in COMPONENTS if (path / c / MODEL_FILE).is_file())
    digests = [
        component_digest([file_sha256(p) for p in component_files(path / c)]) if c in present else "absent" for c in VAE_COMPONENTS
    ]
    named = config.get("latent_space")
    space = spaces.by_name(named) if named else spaces.from_config(channels, factor, scaling, None if shift is None else float(shift))
    return BundleInfo(
        path, derive_model_id(*digests), space, scaling, None if shift is None else float(shift), channels, factor, present,
        {c: f"{c}/{MODEL_FILE}" for c in present},
    )


def check_files(info: BundleInfo, component: str, *, hashes: bool = True) -> None:
    """Compare a component's files with the sizes (and sha256) its manifest recorded; a truncated,
    swapped or missing file raises BundleError naming it. Manifest-less folders have nothing to check.
    A file hashed before and unchanged since is not hashed again (sdlite.verified)."""
    for entry in info.files.get(component, []):
        file_path = info.path / entry.path
        if not file_path.is_file():
            raise BundleError(f"bundle {info.path} lacks {entry.path}, listed in its manifest; re-export the bundle")
        size = file_path.stat().st_size
        if entry.size is not None and size != entry.size:
            raise BundleError(
                f"{file_path} has {size} bytes but the manifest records {entry.size}: the file is truncated or replaced; re-export the bundle"
            )
        if hashes and entry.sha256 and verified.sha256_of(file_path, file_sha256) != entry.sha256:
            raise BundleError(f"{file_path} does not match the sha256 its manifest records: the file was changed; re-export the bundle")
