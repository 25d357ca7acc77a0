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

from sdlite.manifest import COMPONENTS  # one definition, shared with the runtime that reads bundles

from .autoencoder_tiny import check_latent_space, is_autoencoder_tiny, space_of_name, wrappers
from .bundle import DEFAULT_OPSET, convert, install, seal, vae_downsample_factor, write_extras, write_manifest
from . import tae_original
from .errors import ExportError, ValidationError
from .sources import DEFAULT_MODEL, load_components, uncond_embedding
from .validate import validate_component

__all__ = ["export_bundle", "ExportError", "ValidationError", "DEFAULT_MODEL", "COMPONENTS", "DTYPES"]

log = logging.getLogger("export")

DTYPES = ("fp32", "fp16")


def _tiny_wrappers(vae, space):
    return wrappers(vae, space.scaling_factor, space.shift_factor)


def resolve_latent_space(parts: dict, name: str | None, factor: int, source: str | None = None):
    """The bundle's latent space: named by the caller, else read from the VAE's config (an AutoencoderKL
    says its scaling factor), else for an AutoencoderTiny the pipeline's VAE's, else the one its name says
    (madebyollin/taesdxl, a folder taesd3-diffusers: TINY_AUTOENCODERS), else sd1 for 4 channels. None: a
    space sdlite does not know (streams then decode with this VAE only)."""
    from sdlite import latent_space as spaces

    vae = parts["vae"]
    tiny = is_autoencoder_tiny(vae)
    if name is None and tiny and not parts.get("pipeline_vae_config"):
        name = space_of_name(source)
        if name is not None:
            log.info("AutoencoderTiny %s: latent space %s (from its name)", source, name)
    if name is not None:
        try:
            space = spaces.by_name(name)
        except spaces.OptionError as exc:
            raise ExportError(str(exc)) from None
    elif tiny:
        config = parts.get("pipeline_vae_config")
        space = None
        if config:
            space = spaces.from_config(int(config.get("latent_channels", 4)), factor, float(config.get("scaling_factor", 0.18215)),
                                       config.get("shift_factor"))
        if space is None:
            if int(vae.config.latent_channels) != 4:
                candidates = ", ".join(s.name for s in spaces.KNOWN if s.channels == int(vae.config.latent_channels)) or "none known"
                raise ExportError(f"this AutoencoderTiny has {vae.config.latent_channels} latent channels and its name does not say its "
                                  f"latent space; pass --latent-space ({candidates})")
            space = spaces.by_name("sd1")
            log.info("AutoencoderTiny: latent space %s assumed (pass --latent-space to name another)", space.describe())
    else:
        found = spaces.from_config(int(vae.config.latent_channels), factor, float(vae.config.scaling_factor),
                                   getattr(vae.config, "shift_factor", None))
        return found
    if tiny:
        check_latent_space(vae, space)
    elif (int(vae.config.latent_channels), factor) != (space.channels, space.factor) or abs(float(vae.config.scaling_factor) - space.scaling_factor) > 1e-4:
        raise ExportError(
            f"the VAE's configuration ({vae.config.latent_channels} channels, factor {factor}, scaling {vae.config.scaling_factor}) "
            f"is not latent space {space.describe()}"
        )
    return space


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
    latent_space: str | None = None,
    optimize: str | None = None,
    progress=None,
) -> dict:
    """Export a bundle to `output` and return its manifest.

    model: hub id or local diffusers folder (ignored with tiny=True; not read at all for a VAE-only bundle
    from `vae`); revision: hub revision; vae: hub id or folder of another VAE, an AutoencoderKL (e.g.
    stabilityai/sd-vae-ft-mse) or an AutoencoderTiny (madebyollin/taesd); components: any of vae_encoder,
    vae_decoder, unet; dtype: fp32, or fp16 (U-Net only: fp16 SD VAEs overflow); validate/atol: compare
    each ONNX file with PyTorch; force: replace an existing bundle; latent_space: the space's name (see
    sdlite.latent_space) when the VAE's config cannot tell it (an AutoencoderTiny: default the pipeline's,
    else sd1); optimize: None, "cpu" or "cuda" to store onnxruntime's fused graphs (export.optimize);
    progress(component, event, seconds): called per component."""
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
    elif vae and not need_unet and tae_original.is_original_folder(vae):
        parts = {"vae": tae_original.load(vae)}  # published .pth files (TAEF2): diffusers has no class for them
        source = {"kind": "local", "model": None, "revision": None, "vae": str(Path(vae).resolve())}
    else:
        parts = load_components(model, revision=revision, vae=vae, need_unet=need_unet)

        def named(ref):
            return str(Path(ref).resolve()) if ref and Path(ref).exists() else ref

        main = model if need_unet or not vae else vae  # a VAE-only bundle from --vae reads nothing else
        source = {"kind": "local" if Path(main).exists() else "hub", "model": named(model) if need_unet or not vae else None,
                  "revision": revision, "vae": named(vae)}
    log.info("loaded %s in %.1f s", source["model"], time.perf_counter() - started)
    uncond = None
    if need_unet:
        uncond = uncond_embedding(parts["text_encoder"], parts["tokenizer"])
        parts["uncond"] = uncond
    factor = vae_downsample_factor(parts["vae"])
    space = resolve_latent_space(parts, latent_space, factor, vae)
    if is_autoencoder_tiny(parts["vae"]):
        encoder, decoder = _tiny_wrappers(parts["vae"], space)
        parts["vae_reference"] = {"vae_encoder": encoder, "vae_decoder": decoder}
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

        convert(parts, components, staging, opset=opset, dtype=dtype, space=space, on_component=on_component)
        write_extras(parts, staging, uncond)
        manifest = write_manifest(staging, parts, components, source=source, opset=opset, dtype=dtype, validation=validation, space=space)
        if optimize:
            from .optimize import optimize_bundle

            manifest = optimize_bundle(staging, target=optimize)
        seal(staging)
        install(staging, output, force=force)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    log.info("bundle %s (model id %s) written in %.1f s", output, manifest["model_id"], time.perf_counter() - started)
    return manifest
