"""One-time export of Stable Diffusion's VAE (and U-Net) to an sdlite ONNX bundle.

This package is the only place torch, diffusers, transformers and optimum are used.

    from export import export_bundle
    manifest = export_bundle("models/tiny", tiny=True)
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path

from .bundle import DEFAULT_OPSET, convert, install, vae_downsample_factor, write_extras, write_manifest
from .errors import ExportError, ValidationError
from .sources import DEFAULT_MODEL, load_components, uncond_embedding
from .validate import validate_component

__all__ = ["export_bundle", "ExportError", "ValidationError", "DEFAULT_MODEL", "COMPONENTS", "DTYPES"]

log = logging.getLogger("export")

COMPONENTS = ("vae_encoder", "vae_decoder", "unet")
DTYPES = ("fp32", "fp16")


def export_bundle(
    output,
    *,
    model: str = DEFAULT_MODEL,
    revision: str | None = None,
    vae: str | None = None,
    tiny: bool = False,
    components=COMPONENTS,
    dtype: str = "fp32",
    opset: int = DEFAULT_OPSET,
    validate: bool = True,
    atol: float | None = None,
    force: bool = False,
    progress=None,
) -> dict:
    """Export a bundle to `output` and return its manifest.

    model: hub id or local diffusers folder (ignored with tiny=True); revision: hub revision; vae: hub id
    or folder of another AutoencoderKL; components: any of vae_encoder, vae_decoder, unet; dtype: fp32,
    or fp16 (U-Net only: fp16 SD VAEs overflow); validate/atol: compare each ONNX file with PyTorch;
    force: replace an existing bundle; progress(component, event, seconds): called per component."""
    output = Path(output)
    components = list(dict.fromkeys(components))
    unknown = [c for c in components if c not in COMPONENTS]
    if unknown or not components:
        raise ExportError(f"unknown components {unknown or components}; choose from: {', '.join(COMPONENTS)}")
    if dtype not in DTYPES:
        raise ExportError(f"unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}")
    if output.exists() and not force:
        raise ExportError(f"{output} already exists; pass --force (force=True) to replace it")
    started = time.perf_counter()
    need_unet = "unet" in components
    if tiny:
        from .tiny import tiny_components

        parts = tiny_components()
        source = {"kind": "tiny", "model": "tiny-random-sd", "revision": None, "vae": None}
    else:
        parts = load_components(model, revision=revision, vae=vae, need_unet=need_unet)
        kind = "local" if Path(model).exists() else "hub"
        source = {"kind": kind, "model": str(Path(model).resolve()) if kind == "local" else model, "revision": revision, "vae": vae}
    log.info("loaded %s in %.1f s", source["model"], time.perf_counter() - started)
    uncond = None
    if need_unet:
        uncond = uncond_embedding(parts["text_encoder"], parts["tokenizer"])
        parts["uncond"] = uncond
    factor = vae_downsample_factor(parts["vae"])
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a bundle is ordinary data
    try:
        validation = {}

        def on_component(name, event, seconds):
            if event == "done" and validate:
                result = validate_component(name, staging / name / "model.onnx", parts, factor=factor,
                                            dtype=dtype if name == "unet" else "fp32", atol=atol)
                validation[name] = result.max_abs_diff
            if progress:
                progress(name, event, seconds)

        convert(parts, components, staging, opset=opset, dtype=dtype, on_component=on_component)
        write_extras(parts, staging, uncond)
        manifest = write_manifest(staging, parts, components, source=source, opset=opset, dtype=dtype, validation=validation)
        for path in staging.rglob("*"):  # some writers create private files; a bundle is ordinary data
            path.chmod(0o755 if path.is_dir() else 0o644)
        install(staging, output, force=force)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("bundle %s (model id %s) written in %.1f s", output, manifest["model_id"], time.perf_counter() - started)
    return manifest
