"""A model bundle on disk: reading its manifest (or an optimum folder's config.json) and checking its files
(what a model name means and where bundles are found is sdlite.registry's job; the manifest format and ids
are sdlite.manifest's). Shared with the export package, which
writes what this module reads. No sessions here: see sdlite.model for running a bundle.

A bundle is a folder with vae_encoder/, vae_decoder/ and optionally unet/ (each model.onnx, maybe
with external data, and config.json), and a manifest.json written by `python -m export`. A plain
optimum-layout folder without a manifest (such as ../shared/models/vaelight) is read from its
config.json files, and its model id is hashed from its ONNX files.
"""

from __future__ import annotations

import math
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import latent_space as spaces
from . import verified
from .bitstream import MAX_FACTOR, MAX_LATENT_CHANNELS
from .errors import BundleError, ModelNotFoundError, OptionError
from .files import file_sha256, inside, read_json
from .manifest import (BUNDLE_FORMAT, COMPONENTS, MANIFEST, MODEL_FILE, VAE_COMPONENTS, component_digest, component_files,
                       derive_model_id)

UNCOND_FILE = "uncond.npy"
SCHEDULER_CONFIG = "scheduler/scheduler_config.json"
EXPORT_HINT = (
    "use model='taesd' / --model taesd (TAESD 1.3, or taesdxl, taesd3, taef1, taesd@1.2: 5 MB fetched once from a pinned commit and "
    "built without torch), a local AutoencoderTiny folder as the model, or make a bundle with `python -m export --output models/sd15` "
    "(SD 1.5, about 4 GB), `python -m export --model PATH --output models/NAME` for a local diffusers folder, or "
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
def is_bundle(folder: Path) -> bool:
    return (folder / MANIFEST).is_file() or (folder / "vae_decoder" / MODEL_FILE).is_file() or (folder / "vae_encoder" / MODEL_FILE).is_file()


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the bundle
    sha256: str | None
    size: int | None


MAX_EXTRA_BYTES = {UNCOND_FILE: 8 << 20, SCHEDULER_CONFIG: 64 << 10}
"""Bundles made before their extras were hashed: the most bytes uncond.npy and the scheduler config may
have (SD 1.5's embedding is 236 KB, SDXL-sized ones 630 KB; a scheduler config about 1 KB)."""
_HEX = frozenset("0123456789abcdef")


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
    extras: dict = field(default_factory=dict)  # uncond.npy / scheduler config path -> FileEntry (when recorded)

    @property
    def latent_space_id(self) -> int:
        return self.latent_space.id if self.latent_space else spaces.UNKNOWN_ID

    @property
    def latent_space_name(self) -> str:
        return self.latent_space.name if self.latent_space else "unknown"


def _number(manifest_path: Path, value, what: str, *, integer: bool = False, low=None, high=None, optional: bool = False):
    if value is None and optional:
        return None
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or (not integer and not math.isfinite(value)):
        raise BundleError(f"{manifest_path}: {what} must be {'an integer' if integer else 'a finite number'}, got {value!r}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise BundleError(f"{manifest_path}: {what} must be from {low} to {high}, got {value!r}")
    return value


def _file_entry(manifest_path: Path, bundle: Path, entry, what: str) -> FileEntry:
    if not isinstance(entry, dict):
        raise BundleError(f"{manifest_path}: each entry of {what} must be an object with path, sha256 and size")
    inside(bundle, entry.get("path"), f"{what} path")
    digest = entry.get("sha256")
    if not isinstance(digest, str) or len(digest) != 64 or not set(digest) <= _HEX:
        raise BundleError(f"{manifest_path}: {what} {entry.get('path')!r} lacks a sha256 (64 hex digits); re-export the bundle")
    size = _number(manifest_path, entry.get("size"), f"{what} {entry.get('path')!r} size", integer=True, low=0)
    return FileEntry(entry["path"], digest, size)


def _from_manifest(path: Path, manifest_path: Path) -> BundleInfo:
    manifest = read_json(manifest_path)
    if manifest.get("bundle_format") != BUNDLE_FORMAT:
        raise BundleError(f"{manifest_path} has bundle_format {manifest.get('bundle_format')!r}; this sdlite reads {BUNDLE_FORMAT}")
    for key in ("latent_channels", "downsample_factor", "scaling_factor", "components", "model_id"):
        if key not in manifest:
            raise BundleError(f"{manifest_path} lacks a valid {key!r} entry; re-export the bundle")
    channels = _number(manifest_path, manifest["latent_channels"], "latent_channels", integer=True, low=1, high=MAX_LATENT_CHANNELS)
    factor = _number(manifest_path, manifest["downsample_factor"], "downsample_factor", integer=True, low=1, high=MAX_FACTOR)
    scaling = float(_number(manifest_path, manifest["scaling_factor"], "scaling_factor", low=1e-6, high=1e6))
    shift = _number(manifest_path, manifest.get("shift_factor"), "shift_factor", low=-1e6, high=1e6, optional=True)
    model_id = manifest["model_id"]
    if not isinstance(model_id, str) or len(model_id) != 16 or not set(model_id) <= _HEX:
        raise BundleError(f"{manifest_path}: model_id must be 16 lowercase hex digits, got {model_id!r}")
    declared = manifest["components"]
    if not isinstance(declared, dict) or not declared:
        raise BundleError(f"{manifest_path}: components must be an object naming at least one of {', '.join(COMPONENTS)}")
    main_files, files = {}, {}
    for name, entry in declared.items():
        if name not in COMPONENTS:
            continue
        if not isinstance(entry, dict):
            raise BundleError(f"{manifest_path}: components.{name} must be an object with file and files")
        main_files[name] = entry.get("file", f"{name}/{MODEL_FILE}")
        inside(path, main_files[name], f"components.{name}.file")
        listed = entry.get("files", [])
        if not isinstance(listed, list):
            raise BundleError(f"{manifest_path}: components.{name}.files must be a list")
        files[name] = [_file_entry(manifest_path, path, f, f"components.{name}.files") for f in listed]
    if not main_files:
        raise BundleError(f"{manifest_path}: components names none of {', '.join(COMPONENTS)}")
    extras = {}
    for key in ("uncond_embedding", "scheduler"):
        if manifest.get(key) is not None:
            inside(path, manifest[key], key)
    listed_extras = manifest.get("extra_files", [])
    if not isinstance(listed_extras, list):
        raise BundleError(f"{manifest_path}: extra_files must be a list")
    for entry in listed_extras:
        extra = _file_entry(manifest_path, path, entry, "extra_files")
        extras[extra.path] = extra
    return BundleInfo(
        path, model_id, _space_from_manifest(manifest, channels, factor, scaling, shift), scaling,
        None if shift is None else float(shift), channels, factor, frozenset(main_files), main_files, files, manifest,
        manifest.get("quantization") if isinstance(manifest.get("quantization"), (str, dict, type(None))) else None, extras,
    )


def _space_from_manifest(manifest: dict, channels: int, factor: int, scaling: float, shift) -> spaces.LatentSpace | None:
    named = manifest.get("latent_space")
    if isinstance(named, dict):
        named = named.get("name")
    if named:
        try:
            space = spaces.by_name(named)
        except Exception:
            return None  # a space a newer sdlite knows: treat it as unknown
        if (space.channels, space.factor) != (channels, factor):
            raise BundleError(f"the manifest names latent space {space.describe()} but declares {channels} channels at factor {factor}")
        return space
    return spaces.from_config(channels, factor, scaling, shift)


def read_bundle(path: Path) -> BundleInfo:
    """Read a bundle's manifest, or the config.json files of a manifest-less optimum folder."""
    path = Path(path)
    if not is_bundle(path):
        raise ModelNotFoundError(f"{path} is not a model bundle; {EXPORT_HINT}")
    manifest_path = path / MANIFEST
    if manifest_path.is_file():
        return _from_manifest(path, manifest_path)
    if os.path.lexists(manifest_path):  # a folder, FIFO or dangling link where the manifest belongs: not a manifest-less folder
        raise BundleError(f"{manifest_path} is not a regular file; a bundle's manifest must be one (re-export the bundle)")
    config: dict = {}
    for component in VAE_COMPONENTS:
        config_path = path / component / "config.json"
        if config_path.is_file():
            config.update(read_json(config_path))
    where = path / "vae_decoder" / "config.json"
    blocks = config.get("block_out_channels")
    if blocks is not None and "downsample_factor" not in config:
        if not isinstance(blocks, list) or not 1 <= len(blocks) <= 7:
            raise BundleError(f"{where}: block_out_channels must be a list of 1 to 7 entries, got {blocks!r}")
        config["downsample_factor"] = 2 ** (len(blocks) - 1)
    scaling = float(_number(where, config.get("scaling_factor", 0.18215), "scaling_factor", low=1e-6, high=1e6))
    shift = _number(where, config.get("shift_factor"), "shift_factor", low=-1e6, high=1e6, optional=True)
    channels = _number(where, config.get("latent_channels", 4), "latent_channels", integer=True, low=1, high=MAX_LATENT_CHANNELS)
    factor = _number(where, config.get("downsample_factor", config.get("upsample_factor", 8)), "downsample_factor", integer=True,
                     low=1, high=MAX_FACTOR)
    present = frozenset(c for c in COMPONENTS if (path / c / MODEL_FILE).is_file())
    digests = [
        component_digest([verified.sha256_of(p, file_sha256) for p in component_files(path / c)]) if c in present else "absent"
        for c in VAE_COMPONENTS
    ]
    named = config.get("latent_space")
    if named is not None and not isinstance(named, str):
        raise BundleError(f"{where}: latent_space must be a name, got {named!r}")
    try:
        space = spaces.by_name(named) if named else spaces.from_config(channels, factor, scaling, None if shift is None else float(shift))
    except OptionError as exc:
        raise BundleError(f"{where}: {exc}") from None
    if space is not None and (space.channels, space.factor) != (channels, factor):
        raise BundleError(f"{where} names latent space {space.describe()} but declares {channels} channels at factor {factor}")
    return BundleInfo(
        path, derive_model_id(*digests), space, scaling, None if shift is None else float(shift), channels, factor, present,
        {c: f"{c}/{MODEL_FILE}" for c in present},
    )


def check_extra(info: BundleInfo, relative: str, *, hashes: bool = True) -> Path:
    """The path of uncond.npy or the scheduler config, checked: inside the bundle, a regular file, its
    size and sha256 as recorded (bundles exported before extras were recorded: at most MAX_EXTRA_BYTES)."""
    file_path = inside(info.path, relative, "file")
    try:
        status = os.stat(file_path)
    except OSError as exc:
        raise BundleError(f"bundle {info.path} lacks {relative}: {exc.strerror or exc}; re-export the bundle") from None
    if not stat.S_ISREG(status.st_mode):
        raise BundleError(f"{file_path} is not a regular file")
    entry = info.extras.get(relative)
    if entry is None:
        limit = MAX_EXTRA_BYTES.get(relative, MAX_EXTRA_BYTES[SCHEDULER_CONFIG])
        if status.st_size > limit:
            raise BundleError(f"{file_path} has {status.st_size} bytes, over the {limit} such a file may have")
        return file_path
    if status.st_size != entry.size:
        raise BundleError(f"{file_path} has {status.st_size} bytes but the manifest records {entry.size}: the file was replaced; re-export the bundle")
    if hashes and verified.sha256_of(file_path, file_sha256) != entry.sha256:
        raise BundleError(f"{file_path} does not match the sha256 its manifest records: the file was changed; re-export the bundle")
    return file_path


def check_files(info: BundleInfo, component: str, *, hashes: bool = True) -> None:
    """Compare a component's files with the sizes (and sha256) its manifest recorded; a truncated,
    swapped or missing file raises BundleError naming it, and so does a manifest that records none (or
    not the component's main file). Manifest-less folders have nothing to check. A file hashed before
    and unchanged since is not hashed again (sdlite.verified)."""
    if info.manifest is not None:
        listed = {entry.path for entry in info.files.get(component, [])}
        main = info.component_files.get(component, f"{component}/{MODEL_FILE}")
        if main not in listed and (info.path / main).exists():  # a missing file is named when its session is built
            raise BundleError(f"{info.path / MANIFEST} records no size and sha256 for {main}; re-export the bundle")
    for entry in info.files.get(component, []):
        file_path = inside(info.path, entry.path, "file")
        if not file_path.is_file():
            raise BundleError(f"bundle {info.path} lacks {entry.path}, listed in its manifest; re-export the bundle")
        size = file_path.stat().st_size
        if entry.size is not None and size != entry.size:
            raise BundleError(
                f"{file_path} has {size} bytes but the manifest records {entry.size}: the file is truncated or replaced; re-export the bundle"
            )
        if hashes and entry.sha256 and verified.sha256_of(file_path, file_sha256) != entry.sha256:
            raise BundleError(f"{file_path} does not match the sha256 its manifest records: the file was changed; re-export the bundle")
