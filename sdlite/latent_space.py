"""Latent spaces: what a stream's numbers mean, independent of the network that made them.

Several decoders share one latent space (SD 1.x's VAE, sd-vae-ft-mse, TAESD and VAElight all read SD
1.x's 4-channel, 1/8-resolution latents), so a stream made with one of them can be decoded by another
when the caller allows it. A latent space is named by the VAE's configuration: latent channels,
downsample factor and the scaling/shift factors that map raw latents to the U-Net's space. Streams
record its id (one byte); 0 means a space sdlite does not know, which only the encoder's own model
decodes.

Each known space also carries what the codec measured about it (on real encoders of the space: TAESD,
TAESDXL, TAESD3, TAEF1, TAEF2 over Kodak; `python -m bench latent-stats` re-measures): its coding unit (raw
latents times scaling_factor / 0.18215, or a measured coding_scale, so that every space is coded in SD 1.x raw
units, where the quantization steps and rate rules were first measured), for 16- and 32-channel spaces a
decorrelating channel basis, and the budget per latent cell below which its images are coded smaller (sdlite.resolution).
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
COMPONENT_WEIGHT_ONE = 1 << 12  # component weights: uint16 in 1/4096 units (python -m bench component-weights)
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
    coding_scale: float | None = None  # measured, for spaces whose scaling_factor says nothing of their spread (flux2)
    component_weights: tuple | None = None  # measured: per coded component, sqrt(decoder sensitivity) (COMPONENT_WEIGHT_ONE units)

    @property
    def coding_unit(self) -> float:
        """Raw latent units per coding unit's reciprocal: coded value = raw * coding_unit."""
        return self.coding_scale if self.coding_scale is not None else self.scaling_factor / SD1_SCALING

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

# Principal components of FLUX.2's 32 channels, measured on TAEF2's latents of Kodak kodim01-12 (768x512, portrait
# ones turned): rows in order of variance, each of unit length (to 1e-4), largest entry positive.
_FLUX2_BASIS = (
    (1891, -5486, 1341, -1348, 705, -6688, -1440, 3614, 706, 94, 1479, 2088, -804, 517, -3340, 5640, -1845, 524, -4060, 7509, 330, 2551, 1688, -2607, -1036, -1493, -981, -1629, 3296, 2941, 664, 402),
    (1202, 5298, -569, 126, 989, 2886, 149, -3227, 98, 344, 2113, 465, 1511, -785, -2758, 3905, -993, -1660, 2001, 2720, 696, 2131, 1912, 571, 7668, -1765, -6403, -917, -3070, 2283, 3523, 5773),
    (1353, -4367, -5698, 2067, -3444, 2502, 2317, -3132, -2707, 156, 201, 1140, 2537, -760, 1957, 2870, 5690, 3441, -490, 509, 2298, 1031, -4981, -1400, 3836, 231, 1780, -1558, 557, 6249, -2908, -1924),
    (703, -2905, 5149, 5801, 2024, 617, 9325, 3002, -3614, -162, -175, -2975, -355, 1097, -287, 2454, -3154, -1415, 894, -1586, 189, 661, -677, 150, 3480, -712, -2924, -1912, 251, -3001, -1958, -3942),
    (-115, 2408, 550, 2549, -1281, -3861, 5625, -323, -3067, 2180, -618, -112, 1187, -435, -1969, -488, -1060, 2389, 973, -2077, -5768, 1045, 53, -636, -2894, -333, 6607, -2712, -447, 3436, 2232, 7996),
    (1319, -1939, -5225, 1830, 1445, 776, -2255, 1266, -5883, 3566, 891, 7066, 3526, 950, 152, -3282, -1922, -1714, 3639, 2444, 423, 1146, 598, 425, -1829, -230, -655, -5890, -1002, -5728, 634, -337),
    (-4340, 2404, 1777, 2700, -57, 366, -261, 216, -4755, -670, -1145, 3233, -6045, -2903, 8336, 1824, -71, 623, -626, 3464, 2739, -1483, -294, -2168, 1370, 2582, 477, 1625, 4571, -1515, 2401, 3587),
    (-6263, -716, -1344, 1327, 7412, -3684, -410, 1775, -1891, -3223, 30, 2573, 3114, -2075, 534, -1164, 2777, -6352, -155, -491, -2597, -940, -1394, 1556, 1480, -4203, 206, 3656, -1262, 3813, -2702, 257),
    (245, 92, -282, -1166, -1009, 4134, 1235, 148, 368, -5001, -3983, 5701, -4588, 2595, -5592, -576, 2655, -2083, -1901, -776, -5336, 2487, -1611, 2958, 1190, 2958, -1367, -1618, 5440, -1143, -2133, 1627),
    (127, -4819, -1400, -1295, 248, 1693, 4215, -4293, 721, -1480, 2504, 2972, -3673, 1593, 144, 644, -17, -3349, 3950, -1051, 1374, 3474, 5121, 379, -1124, -1727, 4269, 4488, -299, 981, 6963, -2785),
    (4129, 1438, -4317, -4483, -789, -3899, 6751, 3398, 234, -252, -3467, 4380, 875, -2335, 3249, 1215, 459, 2468, -2888, -1620, 967, -996, 649, 3763, -1474, 593, -4626, 4062, -3279, -1413, 923, 535),
    (-83, -3698, -768, -318, 4352, 1935, -1713, 1394, 1362, -1034, -4923, -2705, -392, -1972, 1577, 1474, -3365, -1175, -1249, 2347, -1081, 1046, -2466, 4356, 1687, 7614, 3522, -2971, -5733, 1830, 4233, -191),
    (58, 1613, -3243, 574, 3891, 3175, -533, 6456, 59, -723, 377, -3311, 1703, -1130, 1166, -951, 2955, 2474, -2891, -3990, 2340, 2562, 6702, 1850, 903, -1648, 823, -3953, 5918, 1917, 3403, -317),
    (-2239, -1862, 5359, -3959, 5361, 404, 2969, -2573, 666, 736, -195, 3590, 1600, -4630, -4585, -3611, 4357, 4552, -1286, -299, 3865, -903, 249, -4536, 1621, 2323, 696, -1944, -1500, -2336, 1114, 431),
    (-3661, -1272, -1400, -3866, 522, 7389, 3318, 4439, 3753, 3002, 3208, 2176, 840, 4170, 2846, 2016, -2792, -1060, -3027, 728, -1740, -1814, 949, -4503, 182, -386, 2236, 236, -2487, -36, -3752, 3308),
    (-3156, 3869, -3571, 83, 965, -3480, 1710, 214, -1748, -1597, 3842, -2723, -3597, 5751, -273, -1117, 4012, -1581, -3517, -344, 545, 3717, -2562, -4522, -2383, 3822, -2975, -2675, -4211, -381, 2957, -2119),
    (-3675, -1611, -2927, -677, 1047, -4290, 2497, -3170, 8006, 2942, 911, -18, 1137, -1351, 3918, -2207, -2932, 321, 3473, -1346, -2937, 2443, -1794, -524, 2252, 2535, -3783, -2902, 5956, -103, 271, -372),
    (1438, -3925, 795, 7971, 51, 853, -2446, 2380, 5932, -2171, -1992, 1831, 1539, 1216, 1264, 2384, 4894, 1561, 1215, -2344, -1849, -970, -1352, -3654, -1976, -1527, -2616, 1179, -2417, -3174, 4468, 3580),
    (1829, -3616, -137, -499, 1530, 2506, 2427, -155, -924, 1591, 1858, -6217, -887, -1151, 1673, -4963, 5308, 467, 1259, 7693, -2724, 2833, 824, 2724, -2634, 66, -2542, 3132, 373, -1770, -2065, 4328),
    (-5808, -4244, 567, -4242, -1827, -862, -2748, -1953, -3986, -575, 2368, -2159, 1023, -1356, 530, 7559, 1660, 2356, 390, -4913, -2426, 2577, 1597, 3408, -866, 295, -1504, -1101, -1208, -5006, -1186, 2148),
    (3683, -4014, -822, -809, 1957, -1748, -1270, 856, -92, -2563, 1919, -748, -3894, 970, 133, -2556, -2962, -1872, 1437, -5623, 7629, 1947, -2603, -209, 229, 387, -348, -456, -209, 1040, -3922, 7933),
    (16, -4983, 512, -2466, -4211, -2138, -1962, 1189, -3286, 2374, -4265, -1225, -2892, 1359, 1515, -5214, 1078, -1609, -825, -2291, -3852, -2969, 4744, -3809, 6300, -910, -2846, -1196, -2292, 2366, 1598, 277),
    (-1686, 1124, -1363, 2925, -2678, -4747, 342, 665, 3185, -2371, -46, 348, 1367, 3430, -154, -1408, 1568, 1672, -733, 2905, 2332, 2289, 4282, 2518, 7348, 1366, 6085, 1278, -2072, -5499, -3516, 1050),
    (-4326, -2534, 874, 2177, -5440, 1964, 634, -1246, -1648, -3275, -56, -113, 7161, -55, -1297, -4638, -4924, -676, -6046, 246, 2517, 2553, -371, 246, -1654, 1612, -2822, 3295, 1382, 865, 3229, 1688),
    (-3091, 392, 4863, 2328, -1449, 319, 292, -807, 1944, -485, -1310, 3791, -994, 2024, 2968, -859, 1258, 1720, 2254, 824, 2326, 1897, 5420, 3932, -4599, 904, -3336, -4552, -3979, 6339, -4187, -681),
    (4078, 1488, 6649, -5836, -1189, -850, -56, 1521, -764, -3420, 294, 630, 6397, 3755, 6138, 43, 3064, -3542, 2517, 322, -421, 2774, -2789, -720, 1188, 360, 1834, -2023, 1785, -42, 2148, 252),
    (-1345, -783, 2361, -550, -962, 430, -1223, 3819, 279, -596, 6443, 2695, -3600, 609, 595, -3953, -1525, 6517, -325, 130, -2135, 494, -5774, 5298, 3205, -4758, 84, -247, -1914, 984, 3704, -1401),
    (3695, 990, 2984, 2915, -1065, 300, -2032, -450, 1091, 6173, 3188, 2835, -1170, -5609, 1883, -303, 1390, -4348, -6116, -3321, -2119, 6979, 330, -24, 931, 1437, 1226, 1353, -1637, -443, -1883, -1272),
    (387, 1339, -707, -239, 384, 843, -1929, 4879, -2145, -3284, 373, 732, 776, -2386, -1034, -443, -2727, 4694, 6435, -562, -3034, 5755, 1552, -5676, 708, 4581, -856, 5233, -1103, 2047, -2560, -2057),
    (3427, -907, 1219, 1901, 6330, -792, -1904, -4402, -2602, 1954, 2809, 1689, 2065, 7410, 1562, 259, -854, 4094, -2891, -1984, -2560, -3038, 2215, 1875, 1162, 4880, -1188, 4047, 2090, 1603, -294, 306),
    (-1831, -686, 973, 588, -3672, -986, 530, 5895, 265, 4713, 4386, 675, 999, -191, -4083, 953, 3864, -3654, 4032, -721, 2503, -4645, -451, 3274, 544, 7252, -505, 2127, 1824, 2014, 1962, 714),
    (-3332, 711, 1089, -1022, 1494, 269, -1112, 1375, -639, 8186, -7689, -253, -122, 5337, -1605, 777, 745, 1422, 1261, -514, 3435, 5955, -3515, 862, 319, -2785, -33, 4018, 938, 257, 1035, 301),
)

# How much TAEF2's pictures depend on each of those 32 components: sqrt of the pixel MSE that noise in one
# component adds, over its geometric mean (COMPONENT_WEIGHT_ONE units), measured on 12 photos that are not
# test images (`python -m bench component-weights`, BENCHMARKS.md). They differ 7.4x in sensitivity, so one
# step for every component spends bits where the decoder hardly looks; the other TAE decoders' differ 1.8-2.5x on
# the same photos and a weighting measured no better there.
_FLUX2_WEIGHTS = (4097, 3303, 4195, 6804, 4553, 5802, 5360, 3052, 2813, 3084, 4575, 2798, 3086, 4381, 5709, 3176,
                  6821, 7092, 4593, 5526, 3685, 4753, 4681, 3978, 3991, 5334, 3100, 3548, 3077, 3909, 2956, 2602)

UNKNOWN_ID = 0
KNOWN = (
    # bits_per_cell: measured with `python -m bench scale-rule` (BENCHMARKS.md). sd1 keeps 7: TAESD (LPIPS) wanted 10-11,
    # VAElight (PSNR) 7-8, and 8 lost 0.02 dB on VAElight at 5 kB, so no other value wins on both of its decoders.
    LatentSpace("sd1", 1, 4, 8, SD1_SCALING, bits_per_cell=7.0),  # SD 1.x / 2.x VAEs, sd-vae-ft-mse, TAESD, VAElight
    LatentSpace("sdxl", 2, 4, 8, 0.13025, bits_per_cell=15.0),  # SDXL's VAE, TAESDXL
    LatentSpace("sd3", 3, 16, 8, 1.5305, 0.0609, bits_per_cell=10.0, channel_basis=_SD3_BASIS),
    LatentSpace("flux", 4, 16, 8, 0.3611, 0.1159, bits_per_cell=7.0, channel_basis=_FLUX_BASIS),
    # FLUX.2's VAE normalises its latents with a per-channel batch norm after a 2x2 patchify, outside the raw latents that
    # TAEF2 reads and writes (scale 1, shift 0 here). coding_scale 4.4: TAEF2's raw latents of Kodak have std 0.854, so
    # coded values spread as SD 1.x raw latents do (std 3.78), where the codec's steps and rules were measured.
    LatentSpace("flux2", 5, 32, 8, 1.0, None, bits_per_cell=10.0, channel_basis=_FLUX2_BASIS, coding_scale=4.4,
               component_weights=_FLUX2_WEIGHTS),
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
