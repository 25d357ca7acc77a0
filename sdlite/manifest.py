"""Writing a bundle's manifest, its model id and its permissions: one place for every writer (the torch
export, int8 quantization, graph optimisation and sdlite's own TAE builder). sdlite.bundle reads what
this module writes. The format's names (MANIFEST, COMPONENTS, MODEL_FILE) and its ids live here.

Model ids name the weights: the hash of the VAE's encoder and decoder tensors (names, shapes, float32
values) and of the latent convention (space, scaling, shift), so two exports of the same weights through
another opset, exporter or torch version carry the same id and read each other's streams. Bundles made
before this rule keep the id in their manifest (hashed from their ONNX files), and so keep decoding
their own streams.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np

from .files import file_sha256, write_atomic

MANIFEST = "manifest.json"
BUNDLE_FORMAT = 1
COMPONENTS = ("vae_encoder", "vae_decoder", "unet")
VAE_COMPONENTS = ("vae_encoder", "vae_decoder")
MODEL_FILE = "model.onnx"

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



WEIGHTS_ID_TAG = "sdlite-weights-v1"
MODEL_FILE_MODE = 0o444
"""Model files are written read-only: sdlite.verified trusts its hash records only for files nobody can
write to (a shared mapping could change a writable file without changing its times)."""


def weights_model_id(tensors, *, space: str | None, scaling: float, shift: float | None) -> str:
    """16 hex characters naming a VAE by its weights: `tensors` yields (name, array) for every encoder and
    decoder parameter (any order; U-Net excluded, as it does not change what a stream means)."""
    digest = hashlib.sha256(f"{WEIGHTS_ID_TAG}\n{space}\n{float(scaling)!r}\n{None if shift is None else float(shift)!r}\n".encode())
    for name, array in sorted(tensors, key=lambda item: item[0]):
        values = np.ascontiguousarray(np.asarray(array, dtype="<f4"))
        digest.update(f"{name}\n{values.shape}\n".encode())
        digest.update(values.tobytes())
    return digest.hexdigest()[:16]


def entries(folder: Path, paths) -> list[dict]:
    """Manifest file entries (path relative to the bundle, sha256, size) of files inside `folder`."""
    return [{"path": p.relative_to(folder).as_posix(), "sha256": file_sha256(p), "size": p.stat().st_size} for p in paths]


def file_entries(folder: Path, component: str) -> list[dict]:
    """The manifest's `files` of one component."""
    return entries(folder, component_files(folder / component))


def component_entry(folder: Path, component: str, **details) -> dict:
    return {"file": f"{component}/model.onnx", "files": file_entries(folder, component), **details}


def files_model_id(components: dict) -> str:
    """The pre-weights rule (and the rule for changed functions, such as int8 copies): hashes of the files."""
    digests = {name: component_digest([e["sha256"] for e in entry["files"]]) for name, entry in components.items()}
    return derive_model_id(digests.get("vae_encoder", "absent"), digests.get("vae_decoder", "absent"))


def extra_entries(folder: Path, names) -> list[dict]:
    return entries(folder, [folder / name for name in names if (folder / name).is_file()])


def write(folder: Path, manifest: dict) -> dict:
    """Write folder/manifest.json (atomically) with the fields every manifest has filled in."""
    manifest = {"bundle_format": BUNDLE_FORMAT, **manifest}
    manifest.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    write_atomic(folder / MANIFEST, json.dumps(manifest, indent=2).encode())
    return manifest


def seal(folder: Path) -> None:
    """Ordinary permissions for a bundle (some writers create private files): folders 0755, the model
    files of each component read-only (MODEL_FILE_MODE), everything else 0644."""
    folder.chmod(0o755)
    model_files = {p for c in COMPONENTS if (folder / c).is_dir() for p in component_files(folder / c)}
    for path in folder.rglob("*"):
        path.chmod(0o755 if path.is_dir() else MODEL_FILE_MODE if path in model_files else 0o644)


def install(staging: Path, output: Path, *, force: bool = True) -> None:
    """Move a finished bundle into place; an existing one is replaced only after the new one is whole."""
    backup = None
    if output.exists():
        if not force:
            raise FileExistsError(output)
        backup = output.with_name(f".{output.name}.old")
        if backup.exists():
            shutil.rmtree(backup)
        output.rename(backup)
    try:
        staging.rename(output)
    except BaseException:
        if backup is not None:
            backup.rename(output)
        raise
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
