"""The entropy method's channel transform (format versions 4 and 5): raw latents to the values it codes.

A transform scales raw latents to coding units (SD 1.x raw units, where the method's steps and rules
were measured: see sdlite.latent_space) and, for 16-channel spaces, turns the channels into their
principal components (16-channel spaces, and FLUX.2's 32), which a least-squares predictor and one shared step serve better than correlated
channels (BENCHMARKS.md). From format version 5 a transform may also weight each component by how much the
decoder's pictures depend on it (FLUX.2's transform 5), so that the one shared step is finer where the decoder
looks. The stream names its transform by id; an id's definition never changes once streams carry it (tests
pin each one's digest), so a new measurement gets a new id.

Decoding z = basis^T (y / weight) / unit is evaluated as an elementwise division, then a fixed-order sum of
elementwise float64 products, so every machine reconstructs the same latents from the same symbols.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from ... import latent_space as spaces
from ...errors import BitstreamError


@dataclass(frozen=True)
class ChannelTransform:
    id: int  # the stream's transform byte
    name: str
    unit: float  # coded = raw * unit (before the basis)
    basis: tuple | None = None  # rows in spaces.BASIS_ONE units; None: channels as they are
    channels: int | None = None  # the channel count a basis needs (None: any)
    weights: tuple | None = None  # per component, in spaces.COMPONENT_WEIGHT_ONE units (format version 5); None: all 1
    since_version: int = 4  # the first format version whose streams may name this transform

    def forward(self, latents: np.ndarray) -> np.ndarray:
        """Encoder: raw latents (C, h, w) -> coded values, float64. With a basis, the exact inverse of the
        decoder's reconstruction matrix, so that decode(forward(z)) == z up to rounding. With weights, each
        component is then multiplied by its weight: one step in these units is a step of step / weight in
        the component's own."""
        scaled = np.asarray(latents, dtype=np.float64) * self.unit
        if self.basis is not None:
            reconstruction = self._reconstruction()
            scaled = np.einsum("kc,chw->khw", np.linalg.inv(reconstruction), scaled)
        if self.weights is not None:
            scaled = scaled * self._weights()[:, None, None]
        return scaled

    def inverse(self, coded: np.ndarray) -> np.ndarray:
        """Decoder: coded values (C, h, w) -> raw latents, float64, bit-identical on every machine."""
        coded = np.asarray(coded, dtype=np.float64)
        if self.weights is not None:  # weight / 4096 is exact in float64, the division correctly rounded
            coded = coded / self._weights()[:, None, None]
        if self.basis is not None:
            reconstruction = self._reconstruction()
            out = np.zeros_like(coded)
            for k in range(coded.shape[0]):  # fixed order: no BLAS reduction
                out += reconstruction[:, k][:, None, None] * coded[k]
            coded = out
        return coded / self.unit

    def _weights(self) -> np.ndarray:
        return np.asarray(self.weights, dtype=np.float64) / spaces.COMPONENT_WEIGHT_ONE

    def _reconstruction(self) -> np.ndarray:
        """(C, C): column k is component k's direction in channel space."""
        return np.asarray(self.basis, dtype=np.float64).T / spaces.BASIS_ONE

    def check_channels(self, channels: int) -> None:
        if self.channels is not None and channels != self.channels:
            raise BitstreamError(f"channel transform {self.name} needs {self.channels} latent channels, the stream has {channels}")

    def check_version(self, version: int) -> None:
        if version < self.since_version:
            raise BitstreamError(f"channel transform {self.id} ({self.name}) needs format version {self.since_version} or later; "
                                 f"the stream says version {version}")

    def digest(self) -> str:
        """What the transform computes, hashed (tests pin it: an id's definition must never change)."""
        text = f"{self.id}|{self.unit!r}|{self.basis!r}|{self.channels}"
        if self.weights is not None:  # the fields transforms 0-4 have not: their digests stay as pinned
            text += f"|{self.weights!r}|{self.since_version}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


IDENTITY = ChannelTransform(0, "identity", 1.0)


def _of_space(transform_id: int, name: str, *, weighted: bool = False, since_version: int = 4) -> ChannelTransform:
    space = spaces.by_name(name)
    channels = space.channels if space.channel_basis is not None or weighted else None
    return ChannelTransform(transform_id, f"{name}-v{2 if weighted else 1}", space.coding_unit, space.channel_basis, channels,
                            space.component_weights if weighted else None, since_version)


TRANSFORMS: dict[int, ChannelTransform] = {t.id: t for t in (
    IDENTITY,  # sd1 and unknown spaces: raw latents, as format versions 2 and 3
    _of_space(1, "sdxl"),  # coding units only: a basis measured no better on TAESDXL
    _of_space(2, "sd3"),
    _of_space(3, "flux"),
    _of_space(4, "flux2"),  # format version 4's flux2 streams: one step for all 32 components
    _of_space(5, "flux2", weighted=True, since_version=5),  # each component weighted by TAEF2's sensitivity to it
)}
_BY_SPACE = {"sdxl": 1, "sd3": 2, "flux": 3, "flux2": 5}


def by_id(transform_id: int) -> ChannelTransform:
    transform = TRANSFORMS.get(transform_id)
    if transform is None:
        raise BitstreamError(f"unknown channel transform {transform_id}; this sdlite knows {sorted(TRANSFORMS)}")
    return transform


def for_space(space) -> ChannelTransform:
    """The transform the encoder uses for a latent space (a name, a LatentSpace or None: identity)."""
    name = getattr(space, "name", space)
    return TRANSFORMS[_BY_SPACE[name]] if name in _BY_SPACE else IDENTITY
