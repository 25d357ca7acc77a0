"""Turning PyTorch components into an sdlite bundle: ONNX conversion with optimum, the manifest, and
an atomic write (build in a temporary folder beside the target, rename at the end)."""

from __future__ import annotations

import copy
import json
import logging
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from sdlite import manifest as manifests
from sdlite.bundle import SCHEDULER_CONFIG, UNCOND_FILE
from sdlite.manifest import MODEL_FILE

log = logging.getLogger("export")

DEFAULT_OPSET = 17
EXPORTER_PACKAGES = ("torch", "diffusers", "transformers", "optimum", "optimum-onnx", "onnx", "onnxruntime")


class _ExportPipeline:
    """The attributes optimum's get_diffusion_models_for_export reads from a diffusers pipeline."""

    class config:  # noqa: N801 - mimics pipeline.config
        requires_aesthetics_score = False

    def __init__(self, vae, unet=None, text_encoder=None):
        self.vae = vae
        if unet is not None:
            self.unet = unet
            self.text_encoder = text_encoder


def vae_downsample_factor(vae) -> int:
    """Pixels per latent along each side: the VAE halves the resolution between its blocks."""
    blocks = getattr(vae.config, "block_out_channels", None) or vae.config.encoder_block_out_channels  # KL, or Tiny
    return 2 ** (len(blocks) - 1)


def convert(parts: dict, components: list[str], folder: Path, *, opset: int, dtype: str, space=None, on_component=None) -> None:
    """Export each requested component to folder/NAME/model.onnx (+ config.json): with optimum, except
    an AutoencoderTiny VAE, which optimum does not know (see autoencoder_tiny.py)."""
    from optimum.exporters.onnx import export_models
    from optimum.exporters.utils import get_diffusion_models_for_export

    from .autoencoder_tiny import export_components, is_autoencoder_tiny

    if is_autoencoder_tiny(parts["vae"]):
        export_components(parts["vae"], [c for c in components if c != "unet"], folder, space=space, opset=opset, on_component=on_component)
        components = [c for c in components if c == "unet"]
    vae_exportable = None  # optimum deep-copies the VAE for each call: one call serves both VAE halves
    for name in components:
        started = time.perf_counter()
        if on_component:
            on_component(name, "start", 0.0)
        unet_fp16 = name == "unet" and dtype == "fp16"
        if name == "unet":
            unet = copy.deepcopy(parts["unet"]).half() if unet_fp16 else parts["unet"]
            pipeline = _ExportPipeline(parts.get("pipeline_vae") or parts["vae"], unet, parts.get("text_encoder"))
            exportable = get_diffusion_models_for_export(pipeline, float_dtype="fp16" if unet_fp16 else "fp32")
        else:
            if vae_exportable is None:
                vae_exportable = get_diffusion_models_for_export(_ExportPipeline(parts["vae"]), float_dtype="fp32")
            exportable = vae_exportable
        export_models(
            {name: exportable[name]},
            folder,
            opset=opset,
            output_names=[f"{name}/{MODEL_FILE}"],
            dtype="fp16" if unet_fp16 else None,
        )
        source_config = parts["unet"].config if name == "unet" else parts["vae"].config
        (folder / name / "config.json").write_text(json.dumps(dict(source_config), indent=2, default=str))
        if on_component:
            on_component(name, "done", time.perf_counter() - started)


def _versions() -> dict:
    versions = {}
    for package in EXPORTER_PACKAGES:
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def write_extras(parts: dict, folder: Path, uncond: np.ndarray | None) -> None:
    if "scheduler" in parts:  # only a bundle with a U-Net needs it
        parts["scheduler"].save_config(str(folder / Path(SCHEDULER_CONFIG).parent))
    if uncond is not None:
        np.save(folder / UNCOND_FILE, uncond.astype(np.float32), allow_pickle=False)


def vae_weights(vae):
    """(name, float32 array) of every VAE parameter, for the weights model id (sdlite.manifest)."""
    return [(name, tensor.detach().float().cpu().numpy()) for name, tensor in vae.state_dict().items()]


def write_manifest(folder: Path, parts: dict, components: list[str], *, source: dict, opset: int, dtype: str, validation: dict,
                   space=None) -> dict:
    files = {
        name: manifests.component_entry(folder, name, dtype=dtype if name == "unet" else "fp32",
                                        validation_max_abs_diff=validation.get(name))
        for name in components
    }
    vae_config = parts["vae"].config
    tiny = type(parts["vae"]).__name__ == "AutoencoderTiny"
    scaling = space.scaling_factor if tiny else float(vae_config.scaling_factor)
    shift = space.shift_factor if tiny else getattr(vae_config, "shift_factor", None)
    model_id = manifests.weights_model_id(vae_weights(parts["vae"]), space=space.name if space else None, scaling=scaling,
                                          shift=shift)
    return manifests.write(folder, {
        "model_id": model_id,
        "model_id_rule": "weights",
        "source": source,
        "components": files,
        "latent_space": space.to_manifest() if space else None,
        "vae_class": type(parts["vae"]).__name__,
        "scaling_factor": scaling,
        "shift_factor": shift,
        "latent_channels": int(vae_config.latent_channels),
        "downsample_factor": vae_downsample_factor(parts["vae"]),
        "opset": opset,
        "dtype": dtype,
        "uncond_embedding": UNCOND_FILE if "unet" in components else None,
        "scheduler": SCHEDULER_CONFIG if "scheduler" in parts else None,
        "extra_files": manifests.extra_entries(folder, (UNCOND_FILE, SCHEDULER_CONFIG)),
        "exporter": _versions(),
    })


seal = manifests.seal
install = manifests.install
