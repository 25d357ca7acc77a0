"""compress / decompress: images <-> .sdz bytes through a model bundle (the pipeline glue)."""

from __future__ import annotations

import logging
import threading
import time
import warnings

import numpy as np
from PIL import Image

from . import bitstream, codec_decoders, fetch, images, methods, registry, sessions
from . import latent_space as spaces
from .errors import DecoderNote, ModelMismatchError, OptionError
from .methods import entropy
from .methods.entropy import params as entropy_params
from .methods.entropy.transform import FLAT_BAND_GAINS, NEAR_LOSSLESS_QUALITY, STEP_SCALE
from .model import Model, load_model
from .options import DEFAULT_EFFORT, DEFAULT_METHOD, CompressOptions
from .resolution import AUTO, MAX_AUTO_SCALE, choose_scale, scale_byte
from .scheduler import DEFAULT_STEPS, DEFAULT_STRENGTH
from .tiling import DEFAULT_TILE

log = logging.getLogger("sdlite")

DECODER_MISMATCH = ("error", "allow")
_WARNED_PAIRS_KEPT = 256  # pairs warned about once; the set is emptied when full (a warning may then repeat)
MAX_SEED = 2**63 - 1
_warned_pairs: set[tuple[str, str]] = set()
_warned_lock = threading.Lock()


def _forget_process_state() -> None:
    """What sdlite.clear_cache() empties besides sessions: the entropy coder's last plan (it can hold megabytes
    for a large latent), the warned decoder pairs, fetched weights' digests, the shipped decoder listing."""
    entropy._last_plan.clear()
    with _warned_lock:
        _warned_pairs.clear()
    fetch.forget_digests()
    codec_decoders.shipped.cache_clear()


sessions.on_clear(_forget_process_state)


def _check_seed(seed) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise OptionError(f"seed must be an integer from 0 to {MAX_SEED}, got {seed!r}")
    return int(seed)


def _encode_latents(array, request: CompressOptions, latent_space=None, **method_extra):
    spec = request.spec
    options = {**request.method_options(), **method_extra}
    if "target_bytes" in options:
        options["overhead"] = bitstream.CONTAINER_OVERHEAD
    return spec, spec.encode(array, **options, **spec.context(latent_space))


def _check_latents(latents) -> np.ndarray:
    array = np.asarray(latents)
    if array.ndim == 4:
        if array.shape[0] != 1:
            raise OptionError(f"one latent at a time: got a batch of {array.shape[0]}")
        array = array[0]
    if array.ndim != 3:
        raise OptionError(f"latents must have shape (C, h, w) or (1, C, h, w), got {array.shape}")
    if not np.issubdtype(array.dtype, np.floating) and not np.issubdtype(array.dtype, np.integer):
        raise OptionError(f"latents must be numbers, got dtype {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise OptionError("latents contain NaN or infinity")
    if not 1 <= array.shape[0] <= bitstream.MAX_LATENT_CHANNELS:
        raise OptionError(f"latents must have 1 to {bitstream.MAX_LATENT_CHANNELS} channels, got {array.shape[0]}")
    return array


def compress_latents(
    latents: np.ndarray,
    *,
    model: Model | str | None = None,
    model_id: str | None = None,
    latent_space: str | None = None,
    size: tuple[int, int] | None = None,
    method: str = DEFAULT_METHOD,
    dither: float | None = None,
    target_bytes: int | None = None,
    quality: int | None = None,
    downsample_factor: int = 8,
    stats: dict | None = None,
    near_lossless: bool = False,
) -> bytes:
    """Raw SD latents (C, h, w) or (1, C, h, w) -> .sdz bytes.

    Latents are *raw* (diffusers pipelines hand out latents multiplied by vae.config.scaling_factor:
    divide by it first). The stream needs a model id: pass `model` (bundle or Model), or `model_id` (16
    hex characters) with `latent_space` (e.g. "sd1", so that any decoder of that space may read it).
    size: the (width, height) the stream reports (default: latent size * downsample_factor).
    near_lossless: the entropy method with one step for every band (latents kept as data: training caches),
    at quality 85 unless quality or target_bytes is given; measured within 0.1 dB of the unquantized round
    trip at about 75 % of the bytes of 8-bit latents in lossless JPEG XL (BENCHMARKS.md)."""
    if not isinstance(near_lossless, bool):
        raise OptionError(f"near_lossless must be True or False, got {near_lossless!r}")
    extra = {}
    if near_lossless:
        if method != "entropy":
            raise OptionError(f"near_lossless is a setting of the entropy method, not of {method!r}")
        if quality is None and target_bytes is None:
            quality = NEAR_LOSSLESS_QUALITY
        extra["band_gains"] = FLAT_BAND_GAINS
    request = CompressOptions(method=method, dither=dither, target_bytes=target_bytes, quality=quality)
    array = _check_latents(latents)
    space = None
    if model_id is None:
        if model is None:
            raise OptionError("compress_latents needs model= (a bundle) or model_id= (16 hex characters)")
        loaded = load_model(model)
        model_id, downsample_factor, space = loaded.model_id, loaded.downsample_factor, loaded.latent_space
        if array.shape[0] != loaded.latent_channels:
            raise OptionError(f"latents have {array.shape[0]} channels, the model {loaded.latent_channels}")
    elif latent_space is not None:
        space = spaces.by_name(latent_space)
        if (array.shape[0], downsample_factor) != (space.channels, space.factor):
            raise OptionError(f"latents of {array.shape[0]} channels at factor {downsample_factor} are not of latent space {space.describe()}")
    space_id = space.id if space is not None else spaces.UNKNOWN_ID
    bitstream.model_id_bytes(model_id)  # a bad id fails before any coding work
    if isinstance(downsample_factor, bool) or not isinstance(downsample_factor, int) or not 1 <= downsample_factor <= bitstream.MAX_FACTOR:
        raise OptionError(f"downsample_factor must be an integer from 1 to {bitstream.MAX_FACTOR}, got {downsample_factor!r}")
    _, latent_h, latent_w = array.shape
    width, height = size or (latent_w * downsample_factor, latent_h * downsample_factor)
    spec, encoded = _encode_latents(array, request, latent_space=space, **extra)
    header = bitstream.Header(spec.id, model_id, width, height, array.shape, downsample_factor, encoded.params, latent_space=space_id)
    try:
        bitstream.validate_geometry(header, max_pixels=None)
    except Exception as exc:
        raise OptionError(f"size {size} does not fit latents of shape {array.shape} at factor {downsample_factor}: {exc}") from None
    data = bitstream.pack(header, encoded.payload)
    if stats is not None:
        stats.update(encoded.stats, bytes=len(data), width=width, height=height, bpp=8 * len(data) / (width * height))
    return data


_EFFORT_SCALE_STEP = 2  # effort 3 tries the rule's scale -+ 2/8


_REQUEST_DEFAULTS = {f: getattr(CompressOptions, f) for f in ("method", "dither", "target_bytes", "quality", "scale", "effort",
                                                                 "max_pixels", "tile")}


def _request(options: CompressOptions | None, **given) -> CompressOptions:
    """The checked request: `options` when given (then the separate keywords must be left alone), else one
    built from the keywords."""
    if options is None:
        return CompressOptions(**given)
    if not isinstance(options, CompressOptions):
        raise OptionError(f"options must be a sdlite.CompressOptions, got {type(options).__name__}")
    changed = [k for k, v in given.items() if v != _REQUEST_DEFAULTS[k]]
    if changed:
        raise OptionError(f"pass options= or separate options, not both (also given: {', '.join(changed)})")
    return options


def _psnr(reference: np.ndarray, image: Image.Image) -> float:
    mse = float(np.mean((reference.astype(np.float64) - np.asarray(image, dtype=np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def full_size_latents(rgb: np.ndarray, loaded: Model, *, tile: int | None = DEFAULT_TILE) -> np.ndarray:
    """The encoder's latents (C, h, w) of an RGB image at full size (what compress_rgb starts from)."""
    return loaded.encode(images.to_tensor(images.pad_to_multiple(rgb, loaded.downsample_factor)), tile=tile)[0]


def _best_stream(rgb, loaded: Model, request: CompressOptions, chosen: int, quality, target_bytes, encode_at):
    """(score, scale byte, latents, Encoded) of the stream compress_rgb keeps: one encode at effort 1, else the
    candidate (scales, reconstruction gains) whose decoded picture is closest to the image."""
    spec, scale, effort, tile = request.spec, request.scale, request.effort, request.tile
    height, width = rgb.shape[:2]
    space = loaded.latent_space
    candidates = [chosen]
    if effort >= 3 and scale == AUTO and spec.encode_variants is not None:
        candidates += [s for s in (chosen - _EFFORT_SCALE_STEP, chosen + _EFFORT_SCALE_STEP)
                       if bitstream.SCALE_UNIT <= s <= int(MAX_AUTO_SCALE * bitstream.SCALE_UNIT)]
    options = spec.check_options(**{**request.method_options(), "quality": quality, "target_bytes": target_bytes})
    if "target_bytes" in options:
        options["overhead"] = bitstream.CONTAINER_OVERHEAD
    options.update(spec.context(space))
    best = None
    for scale_value in candidates:
        latents = encode_at(scale_value)
        if effort == 1 or spec.encode_variants is None:
            best = (None, scale_value, latents, spec.encode(latents, **options))
            break
        for encoded in spec.encode_variants(latents, **options):
            decoded = spec.decode(encoded.params, encoded.payload, latents.shape, bitstream.FORMAT_VERSION)[None]
            coded_w, coded_h = bitstream.coded_size(width, height, scale_value)
            picture = images.to_image(loaded.decode(decoded, tile=tile), coded_w, coded_h)
            if (coded_w, coded_h) != (width, height):
                picture = images.resize_image(picture, width, height)
            score = _psnr(rgb, picture)
            if best is None or score > best[0]:
                best = (score, scale_value, latents, encoded)
    return best


def compress_rgb(rgb: np.ndarray, loaded: Model, request: CompressOptions, *, full_latents: np.ndarray | None = None):
    """compress() after its checks: an RGB uint8 array with a loaded model and a checked request -> (stream,
    scale byte, Encoded). full_latents: the encoder's full-size latents when the caller already has them (a
    batched encoder call, see sdlite.ray)."""
    spec, scale, tile = request.spec, request.scale, request.tile
    quality, target_bytes = request.quality, request.target_bytes
    height, width = rgb.shape[:2]
    latents_at: dict[int, np.ndarray] = {} if full_latents is None else {bitstream.SCALE_UNIT: full_latents}

    def encode_at(scale_value: int) -> np.ndarray:
        if scale_value not in latents_at:
            coded_w, coded_h = bitstream.coded_size(width, height, scale_value)
            pixels = rgb if (coded_w, coded_h) == (width, height) else images.resize(rgb, coded_w, coded_h)
            padded = images.pad_to_multiple(pixels, loaded.downsample_factor)
            latents_at[scale_value] = loaded.encode(images.to_tensor(padded), tile=tile)[0]
        return latents_at[scale_value]

    space = loaded.latent_space
    if scale == AUTO:
        chosen, target_bytes = choose_scale(spec, encode_at(bitstream.SCALE_UNIT), target_bytes=target_bytes, quality=quality,
                                            latent_space=space)
        if target_bytes is not None:
            quality = None
    else:
        chosen = scale_byte(scale)
    from_quality = scale == AUTO and request.target_bytes is None and target_bytes is not None
    try:
        best = _best_stream(rgb, loaded, request, chosen, quality, target_bytes, encode_at)
    except OptionError:
        if not from_quality:
            raise
        # the quality's full-size size is below the smallest stream of the reduced image (a flat picture):
        # code it at full size with the quality asked for
        return compress_rgb(rgb, loaded, request.replace(scale=1), full_latents=latents_at.get(bitstream.SCALE_UNIT))
    _, chosen, latents, encoded = best
    header = bitstream.Header(spec.id, loaded.model_id, width, height, latents.shape, loaded.downsample_factor, encoded.params,
                              latent_space=loaded.latent_space_id, scale=chosen)
    bitstream.validate_geometry(header, max_pixels=None)
    return bitstream.pack(header, encoded.payload), chosen, encoded


def compress(
    image,
    *,
    model: Model | str | None = None,
    method: str = DEFAULT_METHOD,
    dither: float | None = None,
    target_bytes: int | None = None,
    quality: int | None = None,
    scale=AUTO,
    effort: int = DEFAULT_EFFORT,
    max_pixels: int | None = bitstream.DEFAULT_MAX_PIXELS,
    tile: int | None = DEFAULT_TILE,
    providers=None,
    threads: int | None = None,
    stats: dict | None = None,
    options: CompressOptions | None = None,
) -> bytes:
    """Compress an image (PIL image, uint8/uint16 array, path, or image-file bytes) to .sdz bytes.

    method: 'entropy' (the default: Haar bands, per-band quantization, context-modelled range coding;
    takes target_bytes or quality 1..100, default quality 50) or 'palette' (the seed method: 8-bit
    latents, 256-colour dithered palette, deflate; fixed rate, takes dither). scale: "auto" (the
    default) codes a smaller image when the budget is too small for a full-size latent (see
    sdlite.resolution), 1 never does, a number from 1 to 4 (in eighths) forces that reduction.
    effort: 1 (the default) codes once; 2 and 3 decode candidate streams with the bundle's VAE decoder
    and keep the one closest to the image (PSNR): 2 chooses reconstruction gains, 3 also the coded
    scale. stats: pass a dict to receive figures such as the scale and the count of clipped latents.
    tile: images over this many latent cells a side (DEFAULT_TILE: 768 px with SD) are encoded by
    overlapping tiles, which bounds memory; None never tiles. options: a CompressOptions built before
    (sdlite.options), instead of the separate keywords above."""
    started = time.perf_counter()
    request = _request(options, method=method, dither=dither, target_bytes=target_bytes, quality=quality, scale=scale,
                       effort=effort, max_pixels=max_pixels, tile=tile)
    loaded = load_model(model, providers=providers, threads=threads)
    request.for_model(loaded)
    rgb = images.load_rgb(image, max_pixels=request.max_pixels)
    data, chosen, encoded = compress_rgb(rgb, loaded, request)
    effort = request.effort
    height, width = rgb.shape[:2]
    log.info("compressed %dx%d to %d bytes (scale %g, effort %d) in %.2f s", width, height, len(data), chosen / bitstream.SCALE_UNIT,
             effort, time.perf_counter() - started)
    if stats is not None:
        stats.update(encoded.stats, bytes=len(data), width=width, height=height, bpp=8 * len(data) / (width * height),
                     scale=chosen / bitstream.SCALE_UNIT, effort=effort, seconds=time.perf_counter() - started)
    return data


def decompress_latents(data: bytes, *, max_pixels: int | None = bitstream.DEFAULT_MAX_PIXELS) -> np.ndarray:
    """.sdz bytes -> raw latents (1, C, h, w) float32, without any model. A stream coded at a reduced
    scale holds the latent of the smaller image (info() gives its coded size)."""
    header, payload = bitstream.unpack(data, max_pixels=max_pixels)
    return methods.by_id(header.method).decode(header.params, payload, header.latent_shape, header.version)[None]


def _check_decoder(header: bitstream.Header, decoder: Model, *, preview: bool, decoder_mismatch: str) -> None:
    """A stream decodes with the encoder's model, or with another decoder of the same known latent space
    when the caller allows it (a preview always does). Raises ModelMismatchError otherwise."""
    if header.factor != decoder.downsample_factor:
        raise ModelMismatchError(
            f"stream declares latent downsample factor {header.factor}, the model {decoder.path} has {decoder.downsample_factor}"
        )
    if header.latent_shape[0] != decoder.latent_channels:
        raise ModelMismatchError(f"stream has {header.latent_shape[0]} latent channels, the model {decoder.path} has {decoder.latent_channels}")
    if header.model_id == decoder.model_id:
        if header.latent_space not in (spaces.UNKNOWN_ID, decoder.latent_space_id):
            raise ModelMismatchError(
                f"stream claims latent space {header.latent_space} for model {header.model_id}, whose bundle says {decoder.latent_space_name}"
            )
        return
    stream_space = spaces.by_id(header.latent_space)
    same_space = stream_space is not None and decoder.latent_space is not None and stream_space.id == decoder.latent_space.id
    if not same_space:
        theirs = stream_space.describe() if stream_space else "unknown"
        ours = decoder.latent_space.describe() if decoder.latent_space else "unknown"
        raise ModelMismatchError(
            f"data was encoded with model {header.model_id} in latent space {theirs}; the model given ({decoder.path}, "
            f"{decoder.model_id}) reads latent space {ours}. Decode with the encoder's model or another decoder of its latent space"
        )
    if preview:
        return
    if decoder_mismatch != "allow":
        raise ModelMismatchError(
            f"data was encoded with model {header.model_id} but the model given is {decoder.model_id} ({decoder.path}); both read "
            f"latent space {stream_space.name}, so pass decoder_mismatch='allow' (CLI: --decoder-mismatch allow) to decode it "
            "with this decoder, or decode with the encoder's model"
        )
    pair = (header.model_id, decoder.model_id)
    with _warned_lock:
        if len(_warned_pairs) >= _WARNED_PAIRS_KEPT:
            _warned_pairs.clear()
        first = pair not in _warned_pairs
        _warned_pairs.add(pair)
    if first:
        warnings.warn(
            f"decoding a stream of model {header.model_id} with another decoder of latent space {stream_space.name} "
            f"({decoder.model_id}, {decoder.path}): the picture will differ from the encoder's own decoding",
            RuntimeWarning, stacklevel=3,
        )


def stream_step(header: bitstream.Header) -> float | None:
    """How coarse a stream is: the entropy method's base quantization step in coding units (the same meaning in
    every latent space); None for the palette method."""
    if methods.by_id(header.method).name != "entropy":
        return None
    return entropy_params.parse(header.params, header.latent_shape, header.version).step_q / STEP_SCALE


def _named_set(model) -> codec_decoders.DecoderSet | None:
    return codec_decoders.shipped().get(model) if isinstance(model, str) else None


def choose_decoder(header: bitstream.Header, model, decoder_mismatch: str, *, providers=None, threads=None) -> tuple[Model, bool]:
    """The decoder for a parsed stream and whether it stands in for the stream's own (no mismatch check then):
    the model given, a shipped decoder set's band for the stream's step (model="taesd-codec"), or, with no
    model, the one sdlite.registry finds (a note when it is not the stream's own)."""
    named = _named_set(model)
    if named is not None:
        stream_space = spaces.by_id(header.latent_space)
        if stream_space is None or stream_space.name != named.latent_space:
            raise ModelMismatchError(f"{named.name} decodes latent space {named.latent_space}; the stream's space is "
                                     f"{stream_space.name if stream_space else 'unknown'}")
        step = stream_step(header)
        band = named.band_for(step) or named.nearest(step)
        return load_model(band.path, providers=providers, threads=threads), True
    if model is not None:
        return load_model(model, providers=providers, threads=threads), False
    choice = registry.choose_decoder(header.model_id, header.latent_space, stream_step(header), strict=decoder_mismatch == "error")
    if choice.note:
        warnings.warn(choice.note, DecoderNote, stacklevel=3)
    log.info("decoding a stream of model %s with %s (%s)", header.model_id, choice.model, choice.reason)
    return load_model(choice.model, providers=providers, threads=threads), choice.reason != "own"


def decompress(
    data: bytes,
    *,
    model: Model | str | None = None,
    preview: Model | str | None = None,
    decoder_mismatch: str | None = None,
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

    model: None (the default) finds the decoder itself: a decoder trained for the codec (shipped with sdlite,
    e.g. taesd-codec for SD 1.x) where one was trained for the stream's coarseness, else the bundle whose model
    id the stream names (the models folder, the cache, the shipped decoders), else its latent space's default
    decoder with a DecoderNote warning. A name of a shipped set ("taesd-codec") picks its band by the stream.
    preview: a bundle (path, name or Model) of the stream's latent space whose VAE decoder decodes it
    instead of `model`, without U-Net denoising: the fast path for thumbnails (e.g. TAESD for SD 1.x).
    decoder_mismatch: "error" refuses any decoder but the encoder's (with no model: only the stream's own
    decoder, found by id); "allow" decodes with another model of the same latent space and warns once;
    None (the default) is "allow" when no model is given and "error" when one is. denoise: run the bundle's
    U-Net for denoise_steps DDIM steps from denoise_strength (default: when the bundle has a U-Net). seed
    fixes the noise of that step, so decoding is reproducible. tile: latents over this many cells a side go
    through the U-Net and the VAE decoder by overlapping tiles (None: never)."""
    if decoder_mismatch is not None and decoder_mismatch not in DECODER_MISMATCH:
        raise OptionError(f"decoder_mismatch must be one of {', '.join(DECODER_MISMATCH)}, got {decoder_mismatch!r}")
    seed = _check_seed(seed)
    header, payload = bitstream.unpack(data, max_pixels=max_pixels)
    if preview is not None:
        decoder, stands_in = load_model(preview, providers=providers, threads=threads), True
    else:
        mismatch = decoder_mismatch or ("allow" if model is None else "error")
        decoder, stands_in = choose_decoder(header, model, mismatch, providers=providers, threads=threads)
    _check_decoder(header, decoder, preview=stands_in, decoder_mismatch=decoder_mismatch or "error")
    latents = methods.by_id(header.method).decode(header.params, payload, header.latent_shape, header.version)[None]
    if denoise is None:
        denoise = decoder.has_unet and preview is None
    if denoise:
        latents = decoder.denoise(latents, strength=denoise_strength, steps=denoise_steps, seed=seed, tile=tile)
    coded_w, coded_h = header.coded_size
    image = images.to_image(decoder.decode(latents, tile=tile), coded_w, coded_h)
    if (coded_w, coded_h) != (header.width, header.height):
        image = images.resize_image(image, header.width, header.height)
    return image


def info(data: bytes) -> dict:
    """What a stream's header says (no model needed)."""
    header, payload = bitstream.unpack(data, max_pixels=None)
    return describe(header, len(payload), len(data))


def describe(header: bitstream.Header, payload_bytes: int, total_bytes: int) -> dict:
    """info()'s dictionary for a parsed header (the CLI's `info` reads files with bitstream.read_header_file)."""
    space = spaces.by_id(header.latent_space)
    coded_w, coded_h = header.coded_size
    return {
        "format_version": header.version,
        "method": methods.by_id(header.method).name,
        "model_id": header.model_id,
        "latent_space": space.name if space else "unknown",
        "width": header.width,
        "height": header.height,
        "scale": header.scale / bitstream.SCALE_UNIT,
        "coded_width": coded_w,
        "coded_height": coded_h,
        "latent_shape": list(header.latent_shape),
        "downsample_factor": header.factor,
        "payload_bytes": payload_bytes,
        "total_bytes": total_bytes,
        "bpp": round(8 * total_bytes / (header.width * header.height), 4),
    }
