"""Method "entropy" (id 2): Haar bands, per-band uniform quantization, a context model, range coding.

Encoding a raw latent z of shape (C, h, w), one concern per module:

0. channels.py: the latent space's channel transform (coding units; principal components for 16
   channels), named by id in the stream.
1. transform.py: a one-level orthonormal Haar decomposition of each channel, coarser steps for the
   detail bands.
2. plan.py: symbols s = round((plane - mean) / step); means, steps and gains are integers in the
   stream; the encoder fits each plane's predictor and residual model (context.py, probability.py).
3. coder.py: residuals range-coded with constriction, all planes of a group advancing together (a
   diagonal over wavefronts inside blocks, context.py), with decoding cost bounded by the stream's
   claims; params.py lays out the side information.
4. rate.py: quality 1..100 maps to the base step (in coding units: the same meaning in every latent
   space); target_bytes searches for it.

Everything the decoder's model depends on is integer data from the stream and integer maths, so the
decoder's probabilities are bit-identical on every machine and thread count.
"""

from __future__ import annotations

import hashlib

import numpy as np

from ...errors import OptionError
from ..base import Encoded, Method, integer_option
from . import channels, coder, params
from .plan import Plan, plan_for_step
from .rate import DEFAULT_QUALITY, QUALITY_MAX, QUALITY_MIN, quality_to_step, search_budget
from .transform import DEFAULT_BAND_GAINS, DEFAULT_LEVELS, GAIN_SCALE, STEP_SCALE

METHOD_ID = 2
MIN_TARGET_BYTES = 60
"""No stream is smaller: the container's 40 bytes, the parameters and a payload (an 8x8 image at quality 1 takes 71)."""
_RETRY_COARSER = 1.02  # when the real size overshoots the estimate, the step grows by 2 % and tries again

__all__ = ["METHOD", "encode", "decode", "plan_for_step", "Plan", "DEFAULT_QUALITY"]


_last_plan: dict = {}  # one entry: the plan estimate_bytes made, which encode then reuses; sdlite.clear_cache() empties it


def _plan_key(coded: np.ndarray, step: float, options: dict) -> tuple:
    return (hashlib.sha256(np.ascontiguousarray(coded, dtype=np.float64).tobytes()).hexdigest(), coded.shape, step, tuple(sorted(options.items())))


def _plan_at_quality(coded: np.ndarray, quality: int | None, options: dict) -> Plan:
    step = quality_to_step(DEFAULT_QUALITY if quality is None else quality)
    key = _plan_key(coded, step, options)
    cached = _last_plan.get(key)
    if cached is None:
        cached = plan_for_step(coded, step, **options)
        _last_plan.clear()
        _last_plan[key] = cached
    return cached


def _coded(latents: np.ndarray, latent_space) -> tuple[np.ndarray, int]:
    """The latents in coding units through the space's channel transform, and its id."""
    transform = channels.for_space(latent_space)
    if transform.channels is not None and latents.shape[0] != transform.channels:
        raise OptionError(f"latent space {getattr(latent_space, 'name', latent_space)} has {transform.channels} channels, the latents {latents.shape[0]}")
    return transform.forward(latents), transform.id


def estimate_bytes(latents: np.ndarray, *, quality: int | None = None, band_gains: tuple[float, float] = DEFAULT_BAND_GAINS,
                   levels: int = DEFAULT_LEVELS, reconstruction_gains: bool = False, latent_space=None) -> int:
    """Parameters + payload that encode(latents, quality=quality) will make, about."""
    coded, transform_id = _coded(latents, latent_space)
    options = {"band_gains": tuple(band_gains), "levels": levels, "reconstruction_gains": reconstruction_gains, "transform_id": transform_id}
    return _plan_at_quality(coded, quality, options).estimated_bytes()


def _encode_plan(latents: np.ndarray, *, quality: int | None, target_bytes: int | None, overhead: int, band_gains, levels,
                 reconstruction_gains: bool, latent_space=None) -> tuple[Plan, bytes]:
    if quality is not None and target_bytes is not None:
        raise OptionError("pass quality or target_bytes, not both")
    for gain in band_gains:
        if not 1 / GAIN_SCALE <= gain <= 255 / GAIN_SCALE:
            raise OptionError(f"band gains must be between {1 / GAIN_SCALE} and {255 / GAIN_SCALE}, got {gain}")
    coded, transform_id = _coded(latents, latent_space)
    options = {"band_gains": tuple(band_gains), "levels": levels, "reconstruction_gains": reconstruction_gains, "transform_id": transform_id}
    if target_bytes is None:
        plan = _plan_at_quality(coded, quality, options)
        return plan, coder.encode_payload(plan)
    budget = target_bytes - overhead
    plan = search_budget(coded, budget, overhead=overhead, **options)
    payload = coder.encode_payload(plan)
    while len(plan.params().pack()) + len(payload) > budget:  # the estimate fell short
        plan = plan_for_step(coded, plan.step_q / STEP_SCALE * _RETRY_COARSER, **options)
        payload = coder.encode_payload(plan)
    return plan, payload


def _encoded(plan: Plan, payload: bytes, gains: bool) -> Encoded:
    stats = {"step": plan.step_q / STEP_SCALE, "levels": plan.levels, "clipped": 0, "reconstruction_gains": gains}
    return Encoded(plan.params(reconstruction_gains=gains).pack(), payload, stats)


def encode(latents: np.ndarray, *, quality: int | None = None, target_bytes: int | None = None, overhead: int = 0,
           band_gains: tuple[float, float] = DEFAULT_BAND_GAINS, levels: int = DEFAULT_LEVELS,
           reconstruction_gains: bool = False, latent_space=None) -> Encoded:
    """Latents (C, h, w) -> Encoded. quality 1..100 (default DEFAULT_QUALITY) or target_bytes (the whole
    stream's size; `overhead` is what the container adds to parameters and payload). reconstruction_gains:
    carry each plane's least-squares reconstruction gain (see params.py). latent_space (a name or a
    LatentSpace; None: unknown) chooses the channel transform (channels.py)."""
    plan, payload = _encode_plan(latents, quality=quality, target_bytes=target_bytes, overhead=overhead, band_gains=band_gains,
                                 levels=levels, reconstruction_gains=reconstruction_gains, latent_space=latent_space)
    return _encoded(plan, payload, reconstruction_gains)


def encode_variants(latents: np.ndarray, **options) -> list[Encoded]:
    """The same payload with and without reconstruction gains (both within any target), for an encoder
    that decodes each and keeps the better: [without, with]."""
    plan, payload = _encode_plan(latents, quality=options.get("quality"), target_bytes=options.get("target_bytes"),
                                 overhead=options.get("overhead", 0), band_gains=options.get("band_gains", DEFAULT_BAND_GAINS),
                                 levels=options.get("levels", DEFAULT_LEVELS), reconstruction_gains=True,
                                 latent_space=options.get("latent_space"))
    return [_encoded(plan, payload, False), _encoded(plan, payload, True)]


def decode(packed: bytes, payload: bytes, shape: tuple[int, int, int], version: int) -> np.ndarray:
    return coder.decode_latents(params.parse(packed, shape, version), payload, shape)


METHOD = Method(
    id=METHOD_ID,
    name="entropy",
    encode=encode,
    decode=decode,
    options={
        "quality": integer_option("quality", QUALITY_MIN, QUALITY_MAX),
        "target_bytes": integer_option("target_bytes", MIN_TARGET_BYTES),
    },
    versions=(2, 3, 4, 5),
    max_params=lambda shape: params.max_raw_size(shape) + 64,  # deflate can expand incompressible data a little
    max_payload=coder.max_payload,
    retired="version 1 held a pre-release context model that no sdlite decodes any more",
    estimate_bytes=estimate_bytes,
    encode_variants=encode_variants,
    space_aware=True,
)
