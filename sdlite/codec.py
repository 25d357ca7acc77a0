"""compress / decompress: images <-> .sdz bytes through a model bundle (the pipeline glue)."""

from __future__ import annotations

import logging
import time

import numpy as np
from PIL import Image

from . import bitstream, images, methods
from .errors import ModelMismatchError, OptionError
from .models import Model, load_model
from .scheduler import DEFAULT_STEPS, DEFAULT_STRENGTH
from .tiling import DEFAULT_TILE

log = logging.getLogger("sdlite")

DEFAULT_METHOD = "entropy"  # beats the palette at its bytes on every metric (BENCHMARKS.md)


def _method_options(method: int, dither, target_bytes, quality) -> dict:
    options = {}
    if method == methods.PALETTE:
        if target_bytes is not None or quality is not None:
            raise OptionError("target_bytes and quality apply to method 'entropy'; the palette method has a fixed rate")
        options["dither"] = 1.0 if dither is None else float(dither)
    else:
        if dither is not None:
            raise OptionError("dither applies to method 'palette' only")
        if target_bytes is not None:
            options["target_bytes"] = target_bytes
        if quality is not None:
            options["quality"] = quality
    return options


def compress_latents(
    latents: np.ndarray,
    *,
    model: Model | str | None = None,
    model_id: str | None = None,
    size: tuple[int, int] | None = None,
    method: str = DEFAULT_METHOD,
    dither: float | None = None,
    target_bytes: int | None = None,
    quality: int | None = None,
    downsample_factor: int = 8,
    stats: dict | None = None,
) -> bytes:
    """Raw SD latents (C, h, w) or (1, C, h, w) -> .sdz bytes.

    Latents are *raw* (diffusers pipelines hand out latents multiplied by vae.config.scaling_factor:
    divide by it first). The stream needs a model id: pass `model` (bundle or Model) or `model_id`.
    size: the (width, height) the stream reports (default: latent size * downsample_factor)."""
    array = np.asarray(latents)
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise OptionError(f"one latent at a time: got a batch of {array.shape[0]}")
        array = array[0]
    if array.ndim != 3:
        raise OptionError(f"latents must have shape (C, h, w) or (1, C, h, w), got {array.shape}")
    if model_id is None:
        if model is None:
            raise OptionError("compress_latents needs model= (a bundle) or model_id= (16 hex characters)")
        loaded = load_model(model)
        model_id, downsample_factor = loaded.model_id, loaded.downsample_factor
    _, latent_h, latent_w = array.shape
    width, height = size or (latent_w * downsample_factor, latent_h * downsample_factor)
    number = methods.method_id(method)
    encoded = methods.encode(number, array, **_method_options(number, dither, target_bytes, quality))
    header = bitstream.Header(number, model_id, width, height, array.shape, downsample_factor, encoded.params)
    bitstream.validate_geometry(header, max_pixels=None)
    data = bitstream.pack(header, encoded.payload)
    if stats is not None:
        stats.update(encoded.stats, bytes=len(data), width=width, height=height, bpp=8 * len(data) / (width * height))
    return data


def compress(
    image,
    *,
    model: Model | str | None = None,
    method: str = DEFAULT_METHOD,
    dither: float | None = None,
    target_bytes: int | None = None,
    quality: int | None = None,
    max_pixels: int | None = bitstream.DEFAULT_MAX_PIXELS,
    tile: int | None = DEFAULT_TILE,
    providers=None,
    threads: int | None = None,
    stats: dict | None = None,
) -> bytes:
    """Compress an image (PIL image, uint8/uint16 array, path, or image-file bytes) to .sdz bytes.

    method: 'entropy' (the default: Haar bands, per-band quantization, context-modelled range coding;
    takes target_bytes or quality 1..100, default quality 50) or 'palette' (the seed method: 8-bit
    latents, 256-colour dithered palette, deflate; fixed rate, takes dither). stats: pass a dict to
    receive figures such as the count of clipped latents. tile: images over this many latent cells a
    side (DEFAULT_TILE: 768 px with SD) are encoded by overlapping tiles, which bounds memory; None
    never tiles."""
    started = time.perf_counter()
    loaded = load_model(model, providers=providers, threads=threads)
    rgb = images.load_rgb(image, max_pixels=max_pixels)
    height, width = rgb.shape[:2]
    padded = images.pad_to_multiple(rgb, loaded.downsample_factor)
    latents = loaded.encode(images.to_tensor(padded), tile=tile)[0]
    data = compress_latents(
        latents, model_id=loaded.model_id, size=(width, height), method=method, dither=dither,
        target_bytes=target_bytes, quality=quality, downsample_factor=loaded.downsample_factor, stats=stats,
    )
    log.info("compressed %dx%d to %d bytes in %.2f s", width, height, len(data), time.perf_counter() - started)
    if stats is not None:
        stats["seconds"] = time.perf_counter() - started
    return data


def decompress_latents(data: bytes, *, max_pixels: int | None = bitstream.DEFAULT_MAX_PIXELS) -> np.ndarray:
    """.sdz bytes -> raw latents (1, C, h, w) float32, without any model."""
    header, payload = bitstream.unpack(data, max_pixels=max_pixels)
    return methods.decode(header.method, header.params, payload, header.latent_shape, header.version)[None]


def decompress(
    data: bytes,
    *,
    model: Model | str | None = None,
    denoise: bool | None = None,
    denoise_strength: float = DEFAULT_STRENGTH,
    denoise_steps: int = DEFAULT_STEPS,
    seed: int = 0,
    max_pixels: int | None = bitstream.DEFAULT_MAX_PIXELS,
    tile: int | None = DEFAULT_TILE,
    providers=None,
    threads: int | None = None,
) -> Image.Image:
    """.sdz bytes -> PIL RGB image of the original size.

    denoise: run the bundle's U-Net for denoise_steps DDIM steps from denoise_strength (default: when
    the bundle has a U-Net). seed fixes the noise of that step, so decoding is reproducible. tile: latents
    over this many cells a side go through the U-Net and the VAE decoder by overlapping tiles (None:
    never)."""
    header, payload = bitstream.unpack(data, max_pixels=max_pixels)
    loaded = load_model(model, providers=providers, threads=threads)
    if header.model_id != loaded.model_id:
        raise ModelMismatchError(
            f"data was encoded with model {header.model_id} but the model given is {loaded.model_id} ({loaded.path}); "
            "decode with the encoder's model"
        )
    if header.latent_shape[0] != loaded.latent_channels:
        raise ModelMismatchError(f"stream has {header.latent_shape[0]} latent channels, the model {loaded.latent_channels}")
    latents = methods.decode(header.method, header.params, payload, header.latent_shape, header.version)[None]
    if denoise is None:
        denoise = loaded.has_unet
    if denoise:
        latents = loaded.denoise(latents, strength=denoise_strength, steps=denoise_steps, seed=seed, tile=tile)
    return images.to_image(loaded.decode(latents, tile=tile), header.width, header.height)


def info(data: bytes) -> dict:
    """What a stream's header says (no model needed)."""
    header, payload = bitstream.unpack(data, max_pixels=None)
    return {
        "format_version": header.version,
        "method": methods.METHOD_NAMES.get(header.method, f"unknown({header.method})"),
        "model_id": header.model_id,
        "width": header.width,
        "height": header.height,
        "latent_shape": list(header.latent_shape),
        "downsample_factor": header.factor,
        "payload_bytes": len(payload),
        "total_bytes": len(data),
        "bpp": round(8 * len(data) / (header.width * header.height), 4),
    }
