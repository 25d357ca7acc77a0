"""Latent spaces: what a stream's numbers mean, independent of the network that made them.

Several decoders share one latent space (SD 1.x's VAE, sd-vae-ft-mse, TAESD and VAElight all read SD
1.x's 4-channel, 1/8-resolution latents), so a stream made with one of them can be decoded by another
when the caller allows it. A latent space is named by the VAE's configuration: latent channels,
downsample factor and the scaling/shift factors that map raw latents to the U-Net's space. Streams
record its id (one byte); 0 means a space sdlite does not know, which only the encoder's own model
decodes.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import OptionError

__all__ = ["LatentSpace", "KNOWN", "UNKNOWN_ID", "by_name", "by_id", "from_config"]


@dataclass(frozen=True)
class LatentSpace:
    name: str
    id: int  # the byte streams carry; 0 is reserved for unknown spaces
    channels: int
    factor: int  # pixels per latent cell along each side
    scaling_factor: float  # raw latent * scaling_factor = the U-Net's latent
    shift_factor: float | None = None  # subtracted before scaling (SD3, Flux)

    def describe(self) -> str:
        shift = f", shift {self.shift_factor}" if self.shift_factor is not None else ""
        return f"{self.name} ({self.channels} channels, factor {self.factor}, scaling {self.scaling_factor}{shift})"

    def to_manifest(self) -> dict:
        return {"name": self.name, "channels": self.channels, "factor": self.factor,
                "scaling_factor": self.scaling_factor, "shift_factor": self.shift_factor}


UNKNOWN_ID = 0
KNOWN = (
    LatentSpace("sd1", 1, 4, 8, 0.18215),  # SD 1.x / 2.x VAEs, sd-vae-ft-mse, TAESD, VAElight
    LatentSpace("sdxl", 2, 4, 8, 0.13025),  # SDXL's VAE, TAESDXL
    LatentSpace("sd3", 3, 16, 8, 1.5305, 0.0609),
    LatentSpace("flux", 4, 16, 8, 0.3611, 0.1159),
)
_SCALE_TOLERANCE = 1e-4


def by_name(name: str) -> LatentSpace:
    for space in KNOWN:
        if space.name == name:
            return space
    raise OptionError(f"unknown latent space {name!r}; choose one of: {', '.join(s.name for s in KNOWN)}")


def by_id(number: int) -> LatentSpace | None:
    """The known space with this stream id, None for 0 (unknown) or an id this sdlite does not know."""
    for space in KNOWN:
        if space.id == number:
            return space
    return None


def from_config(channels: int, factor: int, scaling_factor: float, shift_factor: float | None) -> LatentSpace | None:
    """The known space a VAE configuration describes, or None. scaling_factor must be the raw-latent
    one (diffusers' AutoencoderTiny works in the U-Net's space and reports 1.0: name its space instead)."""
    for space in KNOWN:
        same_shift = (space.shift_factor is None and not shift_factor) or (
            space.shift_factor is not None and shift_factor is not None and abs(space.shift_factor - shift_factor) < _SCALE_TOLERANCE
        )
        if (space.channels, space.factor) == (channels, factor) and abs(space.scaling_factor - scaling_factor) < _SCALE_TOLERANCE and same_shift:
            return space
    return None
