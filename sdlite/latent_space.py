"""Latent spaces: what a stream's numbers mean, independent of the network that made them.

Several decoders share one latent space (SD 1.x's VAE, sd-vae-ft-mse, TAESD and VAElight all read SD
1.x's 4-channel, 1/8-resolution latents), so a stream made with one of them can be decoded by another
when the caller allows it. A latent space is named by the VAE's configuration: latent channels,
downsample factor and the scaling/shift factors that map raw latents to the U-Net's space. Streams
record its id (one byte); 0 means a space sdlite does not know, which only the encoder's own model
decodes.

Each known space also carries what the codec measured about it (on real encoders of the space: TAESD,
TAESDXL, TAESD3, TAEF1 over Kodak; `python -m bench latent-stats` re-measures): its coding unit (raw
latents times scaling_factor / 0.18215, so that every space is coded in SD 1.x raw units, where the
quantization steps and rate rules were first measured), for 16-channel spaces a decorrelating channel
basis, and the budget per latent cell below which its images are coded smaller (sdlite.resolution).
Streams never depend on these numbers directly: the entropy method names its channel transform by an id
(sdlite.methods.entropy.channels) whose definition is frozen once streams carry it.
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import OptionError

__all__ = ["LatentSpace", "KNOWN", "UNKNOWN_ID", "by_name", "by_id", "from_config"]


SD1_SCALING = 0.18215
"""SD 1.x's scaling factor: coding units are raw latents * scaling_factor / SD1_SCALING (sd1: raw)."""
BASIS_ONE = 1 << 14  # channel basis entries: int16 in 1/16384 units
DEFAULT_BITS_PER_CELL = 7.0  # spaces without a measurement (the value first measured for sd1)


@dataclass(frozen=True)
class LatentSpace:
    name: str
    id: int  # the byte streams carry; 0 is reserved for unknown spaces
    channels: int
    factor: int  # pixels per latent cell along each side
    scaling_factor: float  # raw latent * scaling_factor = the U-Net's latent
    shift_factor: float | None = None  # subtracted before scaling (SD3, Flux)
    bits_per_cell: float = DEFAULT_BITS_PER_CELL  # measured: below this budget per full-size cell, code smaller
    channel_basis: tuple | None = None  # measured: rows = decorrelated components (BASIS_ONE units), by variance

    @property
    def coding_unit(self) -> float:
        """Raw latent units per coding unit's reciprocal: coded value = raw * coding_unit."""
        return self.scaling_factor / SD1_SCALING

    def describe(self) -> str:
        shift = f", shift {self.shift_factor}" if self.shift_factor is not None else ""
        return f"{self.name} ({self.channels} channels, factor {self.factor}, scaling {self.scaling_factor}{shift})"

    def to_manifest(self) -> dict:
        return {"name": self.name, "channels": self.channels, "factor": self.factor,
                "scaling_factor": self.scaling_factor, "shift_factor": self.shift_factor}


# Principal components of the 16 channels, measured on TAESD3's and TAEF1's latents of Kodak kodim01-12
# (768x512): rows in order of variance, each of unit length (to 1e-4), largest entry positive.
_SD3_BASIS = ((1423, 1466, 759, 4152, -110, 7393, 1989, 7460, -4524, 550, 5166, 3481, 3911, -3314, -4273, -5297),
              (-1079, -564, 7335, 8796, -5079, 2195, 4419, -3268, 3188, 1303, -2550, 2132, 481, 7004, -1282, 1060),
              (-4824, -3683, 5773, 959, 7051, -2673, 4004, -6136, -6301, -2557, 1029, -1042, -2309, -3333, -2283, -4096),
              (-4442, -3257, -2714, -4057, 4351, 4328, 676, 4485, -846, -5941, -3180, 1331, -1102, 9962, -2773, -73),
              (-2462, -205, 2163, -3769, 1589, 5717, -6009, -3945, -2453, 8969, 915, 6899, -2996, 1896, 2965, -565),
              (-1181, -1557, 2895, 1159, 1886, 6871, 717, 1917, 3195, -2282, 305, -6271, -929, -1547, 11586, -2759),
              (6392, -1084, -930, -2051, -3540, 812, 1659, -4735, -7520, -3194, 7749, -1565, 1505, 5916, 3508, 2037),
              (-7652, 490, -2565, -288, 1468, -64, 6988, 1861, 1736, 4800, 7568, -1297, 47, -205, 451, 7954),
              (-4861, 9817, 2679, -4802, -6337, 1600, 466, -1382, 869, -5147, 2296, -120, -5493, -855, -1654, -2678),
              (3277, -6180, 2247, -6422, -930, 1039, 2003, -1726, 8756, 2155, 5163, -1807, 293, 559, -4981, -5274),
              (-2997, -5545, 6926, -2936, -6218, -6063, -2363, 8305, -3872, 1280, 567, -262, -580, 492, 2122, 202),
              (6959, 1080, 7279, -2885, 4467, 1968, 2103, 2682, 1396, -3154, -531, 4123, -3801, -2904, -610, 8346),
              (3283, 5586, 171, -3002, 3193, -5152, 8214, 2773, -412, 4601, -2311, 2609, 116, 4006, 4532, -5952),
              (-1300, 5799, 5723, 289, 5887, -2948, -6649, 412, 2370, -727, 4286, -2526, 7992, 4144, -663, 412),
              (-3326, -2063, -314, -3237, -2151, -473, 2292, -2831, 2297, -5149, -787, 8988, 9000, -3435, 4289, 186),
              (273, -1530, -2605, 5983, 2028, -4775, -3017, 1508, 4021, -3842, 6997, 6599, -6658, 1511, 2883, -2607))
_FLUX_BASIS = ((2487, 7123, -4887, -424, 1270, 2550, 6629, -4899, 590, 3385, 4544, 607, 4391, -1930, -6577, -3506),
               (-5846, 2049, 7637, -515, 700, -5811, 2087, 163, -3307, 7276, -2207, 3532, 3473, -3088, 2344, -4951),
               (-3519, 2047, -2450, -3476, 4430, 7725, -4009, 5539, -3619, 5218, -650, 2929, -5156, -4583, -2462, 2178),
               (-4249, -2017, -3767, -2055, 2039, -2217, -64, -340, -4629, 4964, 2177, -4329, -1526, 11916, -1610, -1499),
               (-1613, 10059, -1865, -1696, -3631, -1126, -2817, -2105, -4705, -3824, -171, -6050, -3896, -1887, 5678, -2665),
               (7681, 175, -5938, -5823, -2416, -2440, 1311, 5837, 1631, 3166, -4559, 3623, 217, 1540, 4616, -4726),
               (-7212, -2893, -4492, -1832, -1493, -102, 103, -1154, 9514, 2680, 6031, -1080, -1501, -3196, 5457, -1857),
               (-3564, 1118, -2733, 3935, -2415, 608, -7769, -1713, 1352, -3684, -1609, 7931, 525, 3005, -3789, -7582),
               (-3675, 3045, -2780, 6214, -1606, 1815, 7472, -2097, 1740, 1481, -7443, 3688, -4739, 3070, 2756, 4417),
               (19, 1498, -3238, -496, 12512, -1182, -2679, -3990, 765, -2336, -2634, 1326, 4890, 496, 5749, 1568),
               (-3170, 2113, -3326, -5093, -5801, -3843, -2333, -683, -1839, -320, 1106, 4603, 6145, 332, -972, 9893),
               (120, 8182, 6644, -1100, 946, 3048, -1273, 5506, 7432, 150, 2198, 67, 1918, 6879, 732, 1537),
               (4107, 1442, -2256, 10238, -73, -2384, -2809, 3362, -3073, 4440, 7537, 2257, 178, -310, 4357, 2128),
               (808, -2813, 1600, -117, -4407, 10829, -1177, -4069, -3133, 2864, -668, -441, 6315, 1996, 6223, -1187),
               (-3855, 156, -4252, 4930, -766, 252, -383, 7353, 1002, -37, -5258, -7509, 7748, -2246, -2358, -796),
               (3920, 1208, 696, 962, -1333, -2050, -7385, -6149, 4794, 8430, -4970, -4031, -1630, -881, -2819, 2344))

UNKNOWN_ID = 0
KNOWN = (
    # bits_per_cell: measured with `python -m bench scale-rule` (BENCHMARKS.md). sd1 keeps 7: TAESD (LPIPS) wanted 10-11,
    # VAElight (PSNR) 7-8, and 8 lost 0.02 dB on VAElight at 5 kB, so no other value wins on both of its decoders.
    LatentSpace("sd1", 1, 4, 8, SD1_SCALING, bits_per_cell=7.0),  # SD 1.x / 2.x VAEs, sd-vae-ft-mse, TAESD, VAElight
    LatentSpace("sdxl", 2, 4, 8, 0.13025, bits_per_cell=15.0),  # SDXL's VAE, TAESDXL
    LatentSpace("sd3", 3, 16, 8, 1.5305, 0.0609, bits_per_cell=10.0, channel_basis=_SD3_BASIS),
    LatentSpace("flux", 4, 16, 8, 0.3611, 0.1159, bits_per_cell=7.0, channel_basis=_FLUX_BASIS),
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
