"""The TAE family (TAESD, TAESDXL, TAESD3, TAEF1) built into an ONNX bundle with numpy and onnx alone.

diffusers' AutoencoderTiny is one small convolutional network (3x3 convolutions, ReLU, residual blocks,
stride-2 convolutions down and nearest-neighbour upsampling up). This module reads its published
weights (a diffusers folder: config.json + diffusion_pytorch_model.safetensors), writes the same graph
`python -m export --vae` writes with torch (optimum's layout and names, raw latents in and out, a
constant log-variance), and seals it as a bundle whose model id names the weights, so a bundle built
here and one exported with torch from the same weights read each other's streams.

Everything read is treated as untrusted: the config's numbers are bounded, the safetensors header is
size-checked and every tensor must be exactly the one the config implies (no missing, extra or
overlapping data).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import struct
import tempfile
from pathlib import Path

import numpy as np

from . import latent_space as spaces
from . import manifest as manifests
from . import pth
from .bitstream import MAX_LATENT_CHANNELS
from .errors import BundleError, OptionError
from .files import file_sha256, read_json, read_regular

log = logging.getLogger("sdlite")

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "diffusion_pytorch_model.safetensors"
TINY_AUTOENCODERS = {"taesd": "sd1", "taesdxl": "sdxl", "taesd3": "sd3", "taef1": "flux", "taef2": "flux2"}
"""The TAE family's names (hub madebyollin/NAME, or a local folder NAME or NAME-diffusers) and the latent
space each one was trained for."""
LOGVAR = -30.0  # exp(-30) ~ 1e-13: a point distribution, as the torch export and ../shared/models/taesd store it
OPSET = 17
IR_VERSION = 8  # opset 17's IR version: onnxruntime from 1.14 reads it
MAX_WEIGHTS_BYTES = 256 << 20  # TAE weights are 5-10 MB; anything this large is not one
MAX_HEADER_BYTES = 1 << 20
MAX_CONFIG_BYTES = 64 << 10
MAX_WIDTH = 1024  # channels of any block
MAX_STAGES = 6
MAX_BLOCKS_PER_STAGE = 16
GROUP_NORM_EPS = 1e-5  # torch's GroupNorm default, as TAEF2 uses it
POOL_WIDTH = 4  # TAEF2's pool branch widens to 4x the block's channels ...
POOL_GROUPS = 4  # ... and normalises them in 4 groups
SAFETENSORS_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2")}


def space_of_name(source) -> str | None:
    """The latent space a TAE model's hub id or folder name implies (madebyollin/taesd3, .../taef1-diffusers), or None."""
    if not source:
        return None
    name = Path(str(source).rstrip("/\\")).name.lower()
    for suffix in ("-diffusers", "_diffusers", "-pth"):
        name = name.removesuffix(suffix)
    return TINY_AUTOENCODERS.get(name)


def is_tae_folder(path: Path) -> bool:
    """A diffusers AutoencoderTiny folder (config.json naming AutoencoderTiny, and its safetensors)."""
    path = Path(path)
    if not ((path / CONFIG_FILE).is_file() and (path / WEIGHTS_FILE).is_file()):
        return False
    try:
        return _read_config_json(path / CONFIG_FILE).get("_class_name") == "AutoencoderTiny"
    except BundleError:
        return False


def _read_config_json(path: Path) -> dict:
    return read_json(path, MAX_CONFIG_BYTES, "an AutoencoderTiny config.json", follow_links=True)  # hub caches link their files


def _int_list(where, config: dict, key: str, *, low: int, high: int, length: int | None = None) -> list[int]:
    value = config.get(key)
    if (not isinstance(value, list) or not 1 <= len(value) <= MAX_STAGES or (length is not None and len(value) != length)
            or not all(isinstance(v, int) and not isinstance(v, bool) and low <= v <= high for v in value)):
        wanted = f"{length} integers" if length else f"1 to {MAX_STAGES} integers"
        raise BundleError(f"{where}: {key} must be a list of {wanted} from {low} to {high}, got {value!r}"[:300])
    return value


def read_config(path: Path) -> dict:
    """An AutoencoderTiny config.json, checked: the architecture this module builds and bounded sizes."""
    where = path / CONFIG_FILE
    config = _read_config_json(where)
    if config.get("_class_name") != "AutoencoderTiny":
        raise BundleError(f"{where} describes {config.get('_class_name')!r}, not an AutoencoderTiny (TAESD and its kin)")
    for key, wanted in (("act_fn", "relu"), ("upsample_fn", "nearest"), ("upsampling_scaling_factor", 2),
                        ("in_channels", 3), ("out_channels", 3)):
        if config.get(key, wanted) != wanted:
            raise BundleError(f"{where}: {key} is {config.get(key)!r}; sdlite builds AutoencoderTiny with {key} = {wanted!r}")
    stages = len(_int_list(where, config, "encoder_block_out_channels", low=1, high=MAX_WIDTH))
    checked = {
        "encoder_block_out_channels": config["encoder_block_out_channels"],
        "decoder_block_out_channels": _int_list(where, config, "decoder_block_out_channels", low=1, high=MAX_WIDTH),
        "num_encoder_blocks": _int_list(where, config, "num_encoder_blocks", low=0, high=MAX_BLOCKS_PER_STAGE, length=stages),
    }
    checked["num_decoder_blocks"] = _int_list(where, config, "num_decoder_blocks", low=0, high=MAX_BLOCKS_PER_STAGE,
                                              length=len(checked["decoder_block_out_channels"]))
    channels = config.get("latent_channels")
    if not isinstance(channels, int) or isinstance(channels, bool) or not 1 <= channels <= MAX_LATENT_CHANNELS:
        raise BundleError(f"{where}: latent_channels must be an integer from 1 to {MAX_LATENT_CHANNELS}, got {channels!r}")
    checked["latent_channels"] = channels
    named = config.get("_name_or_path")  # diffusers writes the hub id it loaded from (madebyollin/taef1)
    checked["name_or_path"] = named if isinstance(named, str) and len(named) <= 200 else None
    return checked


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as float32 arrays (F32, F16 and BF16 accepted), checked: the
    header is bounded, every tensor lies inside the data, and no two overlap."""
    data = read_regular(path, MAX_WEIGHTS_BYTES, "a TAE's weights", follow_links=True)  # hub caches link their files
    if len(data) < 8:
        raise BundleError(f"{path} is not a safetensors file (too short)")
    (header_size,) = struct.unpack("<Q", data[:8])
    if not 2 <= header_size <= min(MAX_HEADER_BYTES, len(data) - 8):
        raise BundleError(f"{path} is not a safetensors file (header size {header_size})")
    try:
        header = json.loads(data[8:8 + header_size])
    except (ValueError, RecursionError) as exc:
        raise BundleError(f"{path}: unreadable safetensors header ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise BundleError(f"{path}: the safetensors header is not a JSON object")
    body = memoryview(data)[8 + header_size:]
    entries = []
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype_name = entry.get("dtype") if isinstance(entry, dict) else None
        if not isinstance(dtype_name, str) or dtype_name not in SAFETENSORS_DTYPES:
            raise BundleError(f"{path}: tensor {name!r} has dtype {dtype_name if isinstance(entry, dict) else entry!r}; "
                              f"sdlite reads {', '.join(SAFETENSORS_DTYPES)}"[:300])
        shape, offsets = entry.get("shape"), entry.get("data_offsets")
        dtype = SAFETENSORS_DTYPES[dtype_name]
        if (not isinstance(shape, list) or len(shape) > 8 or not all(isinstance(s, int) and 0 <= s <= 1 << 30 for s in shape)
                or not isinstance(offsets, list) or len(offsets) != 2 or not all(isinstance(o, int) for o in offsets)
                or not 0 <= offsets[0] <= offsets[1] <= len(body)
                or offsets[1] - offsets[0] != math.prod(shape) * dtype.itemsize):
            raise BundleError(f"{path}: tensor {name!r} has an inconsistent shape or data offsets")
        entries.append((offsets[0], offsets[1], name, dtype_name, shape))
    entries.sort()
    # overlaps are refused before anything is copied: the cost is bounded by the file's size, not the header's claims
    for (_, end, first, *_), (start, _, second, *_) in zip(entries, entries[1:]):
        if start < end:
            raise BundleError(f"{path}: tensors {first!r} and {second!r} overlap")
    tensors = {}
    for start, end, name, dtype_name, shape in entries:
        raw = np.frombuffer(body[start:end], dtype=SAFETENSORS_DTYPES[dtype_name])
        if dtype_name == "BF16":
            raw = (raw.astype(np.uint32) << 16).view(np.float32)
        tensors[name] = raw.astype(np.float32).reshape(shape)
    return tensors


class _Graph:
    """Nodes and float32 initializers of one ONNX graph, with the parameters taken from `weights` by name."""

    def __init__(self, weights: dict[str, np.ndarray], prefix: str):
        self.weights, self.prefix = weights, prefix
        self.nodes, self.initializers, self.used = [], [], set()
        self._count = 0

    def _name(self, kind: str) -> str:
        self._count += 1
        return f"{kind}_{self._count}"

    def param(self, name: str, shape: tuple) -> str:
        from onnx import numpy_helper

        full = f"{self.prefix}.{name}"
        value = self.weights.get(full)
        if value is None:
            raise BundleError(f"the weights lack {full} (shape {list(shape)}) that the config implies")
        if tuple(value.shape) != tuple(shape):
            raise BundleError(f"the weights' {full} has shape {list(value.shape)}; the config implies {list(shape)}")
        self.used.add(full)
        self.initializers.append(numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), full))
        return full

    def constant(self, value, name: str) -> str:
        from onnx import numpy_helper

        self.initializers.append(numpy_helper.from_array(np.asarray(value, dtype=np.float32), name))
        return name

    def node(self, op: str, inputs: list[str], **attributes) -> str:
        from onnx import helper

        output = self._name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attributes))
        return output

    def conv(self, x: str, layer: str, cin: int, cout: int, *, kernel: int = 3, stride: int = 1, bias: bool = True) -> str:
        inputs = [x, self.param(f"{layer}.weight", (cout, cin, kernel, kernel))]
        if bias:
            inputs.append(self.param(f"{layer}.bias", (cout,)))
        pad = kernel // 2
        return self.node("Conv", inputs, kernel_shape=[kernel, kernel], strides=[stride, stride], pads=[pad] * 4)

    def group_norm(self, x: str, layer: str, channels: int, groups: int) -> str:
        """torch's GroupNorm (eps 1e-5, affine) in opset 17, as torch.onnx writes it: reshape to (B, groups, -1),
        InstanceNormalization, reshape back, then the per-channel scale and bias."""
        from onnx import numpy_helper

        gamma = self.weights.get(f"{self.prefix}.{layer}.weight")
        beta = self.weights.get(f"{self.prefix}.{layer}.bias")
        for name, value in (("weight", gamma), ("bias", beta)):
            if value is None or tuple(value.shape) != (channels,):
                raise BundleError(f"the weights lack {self.prefix}.{layer}.{name} of shape [{channels}] that the config implies")
            self.used.add(f"{self.prefix}.{layer}.{name}")
        self.initializers += [
            numpy_helper.from_array(np.array([0, groups, -1], dtype=np.int64), f"{layer}.grouped"),
            numpy_helper.from_array(np.ones(groups, dtype=np.float32), f"{layer}.unit_scale"),
            numpy_helper.from_array(np.zeros(groups, dtype=np.float32), f"{layer}.zero_bias"),
            numpy_helper.from_array(np.ascontiguousarray(gamma.reshape(channels, 1, 1), dtype=np.float32), f"{self.prefix}.{layer}.weight"),
            numpy_helper.from_array(np.ascontiguousarray(beta.reshape(channels, 1, 1), dtype=np.float32), f"{self.prefix}.{layer}.bias"),
        ]
        grouped = self.node("Reshape", [x, f"{layer}.grouped"])
        normed = self.node("InstanceNormalization", [grouped, f"{layer}.unit_scale", f"{layer}.zero_bias"], epsilon=GROUP_NORM_EPS)
        y = self.node("Reshape", [normed, self.node("Shape", [x])])
        return self.node("Add", [self.node("Mul", [y, f"{self.prefix}.{layer}.weight"]), f"{self.prefix}.{layer}.bias"])

    def pool(self, x: str, layer: str, channels: int) -> str:
        """TAEF2's branch before a Block: x + conv1x1(relu(GroupNorm(4, conv1x1(x) to 4x the channels)))."""
        wide = POOL_WIDTH * channels
        y = self.conv(x, f"{layer}.pool.0", channels, wide, kernel=1, bias=False)
        y = self.node("Relu", [self.group_norm(y, f"{layer}.pool.1", wide, POOL_GROUPS)])
        return self.node("Add", [x, self.conv(y, f"{layer}.pool.3", wide, channels, kernel=1, bias=False)])

    def block(self, x: str, layer: str, channels: int, *, pool: bool = False) -> str:
        """AutoencoderTinyBlock with equal in/out channels: relu(conv(relu(conv(relu(conv(x))))) + x), after
        TAEF2's pool branch when `pool`."""
        if pool:
            x = self.pool(x, layer, channels)
        y = self.node("Relu", [self.conv(x, f"{layer}.conv.0", channels, channels)])
        y = self.node("Relu", [self.conv(y, f"{layer}.conv.2", channels, channels)])
        y = self.conv(y, f"{layer}.conv.4", channels, channels)
        return self.node("Relu", [self.node("Add", [y, x])])


def _check_all_used(weights: dict, graphs: list[_Graph]) -> None:
    used = set().union(*(g.used for g in graphs))
    extra = sorted(set(weights) - used)
    if extra:
        raise BundleError(f"the weights hold {len(extra)} tensors the config does not describe (first: {extra[0]}); "
                          "is config.json the one that came with them?")


def _model(graph: _Graph, input_name: str, input_channels: int, output: str, output_name: str, output_channels: int,
           doc: str):
    from onnx import TensorProto, helper

    graph.nodes.append(helper.make_node("Identity", [output], [output_name], name="output"))
    dims = lambda channels: ["batch_size", channels, "height", "width"]  # noqa: E731
    body = helper.make_graph(
        graph.nodes, doc, [helper.make_tensor_value_info(input_name, TensorProto.FLOAT, dims(input_channels))],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, dims(output_channels))], graph.initializers,
    )
    model = helper.make_model(body, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="sdlite.tae")
    model.ir_version = IR_VERSION
    return model


def encoder_model(config: dict, weights: dict, space: spaces.LatentSpace):
    """sample [B,3,H,W] in [-1,1] -> latent_parameters [B,2C,H/f,W/f]: raw latents, then LOGVAR."""
    g = _Graph(weights, "encoder")
    x = g.node("Mul", [g.node("Add", ["sample", g.constant(1.0, "one")]), g.constant(0.5, "half")])
    widths, blocks = config["encoder_block_out_channels"], config["num_encoder_blocks"]
    layer, channels = 0, 3
    for stage, (width, count) in enumerate(zip(widths, blocks)):
        if stage == 0:
            x = g.conv(x, f"layers.{layer}", channels, width)
        else:
            x = g.conv(x, f"layers.{layer}", channels, width, stride=2, bias=False)
        layer, channels = layer + 1, width
        for _ in range(count):
            x = g.block(x, f"layers.{layer}", width, pool=config.get("midblock_pool", False) and stage == len(widths) - 1)
            layer += 1
    latents = g.conv(x, f"layers.{layer}", channels, config["latent_channels"])
    mean = g.node("Div", [latents, g.constant(space.scaling_factor, "scaling_factor")])
    if space.shift_factor:
        mean = g.node("Add", [mean, g.constant(space.shift_factor, "shift_factor")])
    logvar = g.node("Expand", [g.constant(LOGVAR, "logvar"), g.node("Shape", [mean])])
    out = g.node("Concat", [mean, logvar], axis=1)
    return g, _model(g, "sample", 3, out, "latent_parameters", 2 * config["latent_channels"], "vae_encoder")


def decoder_model(config: dict, weights: dict, space: spaces.LatentSpace):
    """latent_sample [B,C,h,w] (raw latents) -> sample [B,3,h*f,w*f] in about [-1,1]."""
    from onnx import numpy_helper

    g = _Graph(weights, "decoder")
    x = "latent_sample"
    if space.shift_factor:
        x = g.node("Sub", [x, g.constant(space.shift_factor, "shift_factor")])
    x = g.node("Mul", [x, g.constant(space.scaling_factor, "scaling_factor")])
    three = g.constant(3.0, "three")
    x = g.node("Mul", [g.node("Tanh", [g.node("Div", [x, three])]), three])  # AutoencoderTiny's soft clamp
    widths, blocks = config["decoder_block_out_channels"], config["num_decoder_blocks"]
    x = g.node("Relu", [g.conv(x, "layers.0", config["latent_channels"], widths[0])])
    layer, channels = 2, widths[0]
    g.initializers.append(numpy_helper.from_array(np.array([1, 1, 2, 2], dtype=np.float32), "upsample_scales"))
    for stage, (width, count) in enumerate(zip(widths, blocks)):
        if width != channels:
            raise BundleError(f"decoder_block_out_channels {widths} change width between stages; AutoencoderTiny keeps it")
        for _ in range(count):
            x = g.block(x, f"layers.{layer}", width, pool=config.get("midblock_pool", False) and stage == 0)
            layer += 1
        final = stage == len(widths) - 1
        if not final:
            x = g.node("Resize", [x, "", "upsample_scales"], mode="nearest", coordinate_transformation_mode="asymmetric",
                       nearest_mode="floor")
            layer += 1
        x = g.conv(x, f"layers.{layer}", width, 3 if final else width, bias=final)
        layer += 1
    out = g.node("Sub", [g.node("Mul", [x, g.constant(2.0, "two")]), g.constant(1.0, "one")])
    return g, _model(g, "latent_sample", config["latent_channels"], out, "sample", 3, "vae_decoder")


def resolve_space(folder: Path, config: dict, latent_space: str | None) -> spaces.LatentSpace:
    """The latent space: the one named, else the folder's name (taesd3-diffusers -> sd3), else the hub id
    its config.json records (a hub cache snapshot's folder is named by a revision)."""
    name = latent_space or space_of_name(folder.resolve().name) or space_of_name(config.get("name_or_path"))
    if name is None:
        fits = [s.name for s in spaces.KNOWN if s.channels == config["latent_channels"]]
        raise OptionError(f"cannot tell which latent space {folder} was trained for from its name or config; name the folder "
                          f"after its model ({', '.join(TINY_AUTOENCODERS)}, optionally with -diffusers), or build it with "
                          f"sdlite.tae.build_bundle(folder, output, latent_space=...) choosing one of "
                          f"{', '.join(fits) or 'none known for its channel count'}")
    space = spaces.by_name(name)
    if space.channels != config["latent_channels"]:
        raise BundleError(f"{folder} has {config['latent_channels']} latent channels but latent space {space.name} has {space.channels}")
    return space


def build_bundle(source: Path, output: Path, *, latent_space: str | None = None, origin: dict | None = None) -> dict:
    """Build the bundle of the AutoencoderTiny folder `source` at `output` (replaced once whole); return its manifest."""
    source = Path(source)
    config = read_config(source)
    space = resolve_space(source, config, latent_space)
    weights = read_safetensors(source / WEIGHTS_FILE)
    return build_from_weights(config, weights, space, output, origin=origin or {"kind": "local", "model": str(source.resolve()), "revision": None, "vae": None},
                              weights_sha256=file_sha256(source / WEIGHTS_FILE), described=str(source))


STANDARD_CONFIG = {"encoder_block_out_channels": [64, 64, 64, 64], "decoder_block_out_channels": [64, 64, 64, 64],
                   "num_encoder_blocks": [1, 3, 3, 3], "num_decoder_blocks": [3, 3, 3, 1], "name_or_path": None}
"""The architecture every published TAE release shares (latent_channels is the space's; TAEF2 adds the pool
branch: midblock_pool)."""
PTH_SUFFIXES = ("_encoder.pth", "_decoder.pth")
MAX_PTH_BYTES = 64 << 20  # the published .pth files are 2.7-5 MB


def original_config(weights: dict, space: spaces.LatentSpace) -> dict:
    """The config of published weights (diffusers names, from_original_layout): the standard architecture, with
    TAEF2's pool branch (encoder's last stage, decoder's first) when the weights have one."""
    return {**STANDARD_CONFIG, "latent_channels": space.channels, "midblock_pool": any(".pool." in name for name in weights)}


def pth_files(folder: Path) -> tuple[Path, Path] | None:
    """(encoder, decoder) of a folder holding one published pair (NAME_encoder.pth, NAME_decoder.pth), else None."""
    folder = Path(folder)
    try:
        names = sorted(p.name for p in folder.iterdir() if p.name.endswith(PTH_SUFFIXES))
    except OSError:
        return None
    encoders = [n for n in names if n.endswith(PTH_SUFFIXES[0])]
    if len(encoders) != 1 or len(names) != 2:
        return None
    stem = encoders[0][: -len(PTH_SUFFIXES[0])]
    decoder = folder / f"{stem}{PTH_SUFFIXES[1]}"
    return (folder / encoders[0], decoder) if decoder.name in names else None


def build_from_pth_pair(encoder: Path, decoder: Path, space: spaces.LatentSpace, output: Path, *, origin: dict, described: str) -> dict:
    """Build the bundle of one published pair of .pth files (madebyollin/taesd's layout) without torch: read by
    sdlite.pth's restricted reader, renamed by from_original_layout, the architecture from original_config."""
    for path in (encoder, decoder):
        read_regular_size_check(path)
    weights = from_original_layout(pth.read_state_dict(encoder, max_bytes=MAX_PTH_BYTES), pth.read_state_dict(decoder, max_bytes=MAX_PTH_BYTES))
    return build_from_weights(original_config(weights, space), weights, space, output, origin=origin, described=described)


def build_from_pth(folder: Path, output: Path, *, latent_space: str | None = None, origin: dict | None = None) -> dict:
    """Build the bundle of a folder of published .pth files (taef2_encoder.pth + taef2_decoder.pth); the latent
    space is the one named, else the one the files' or the folder's name implies."""
    folder = Path(folder)
    pair = pth_files(folder)
    if pair is None:
        raise BundleError(f"{folder} does not hold one NAME_encoder.pth and NAME_decoder.pth pair")
    name = latent_space or space_of_name(pair[0].name[: -len(PTH_SUFFIXES[0])]) or space_of_name(folder.name)
    if name is None:
        raise OptionError(f"cannot tell which latent space {pair[0].name} was trained for; pass latent_space= "
                          f"({', '.join(s.name for s in spaces.KNOWN)})")
    return build_from_pth_pair(*pair, spaces.by_name(name), output, described=str(folder),
                               origin=origin or {"kind": "local", "model": str(folder.resolve()), "revision": None, "vae": None})


def from_original_layout(encoder: dict, decoder: dict) -> dict:
    """The weights of the published .pth files (madebyollin/taesd's nn.Sequential names) under diffusers'
    AutoencoderTiny names: encoder "N.x" -> "encoder.layers.N.x"; decoder "N.x" -> "decoder.layers.(N-1).x"
    (the original decoder starts with its clamp, which diffusers applies outside its layers)."""
    out = {}
    for prefix, tensors, offset in (("encoder", encoder, 0), ("decoder", decoder, 1)):
        for name, array in tensors.items():
            head, _, rest = name.partition(".")
            if not head.isdigit() or not rest or int(head) < offset:
                raise BundleError(f"the {prefix} weights hold {name[:80]!r}, which is not a layer of the published TAE networks")
            out[f"{prefix}.layers.{int(head) - offset}.{rest}"] = array
    return out


def build_from_weights(config: dict, weights: dict, space: spaces.LatentSpace, output: Path, *, origin: dict,
                       weights_sha256: str | None = None, described: str = "weights") -> dict:
    """Build the bundle of AutoencoderTiny weights (diffusers names) with a checked config at `output`."""
    import onnx

    source = described
    factor = 2 ** (len(config["encoder_block_out_channels"]) - 1)
    if 2 ** (len(config["decoder_block_out_channels"]) - 1) != factor:
        raise BundleError(f"{source}: the encoder downsamples by {factor} but the decoder upsamples by "
                          f"{2 ** (len(config['decoder_block_out_channels']) - 1)}")
    if factor != space.factor:
        raise BundleError(f"{source} downsamples by {factor}; latent space {space.name} by {space.factor}")
    if config["latent_channels"] != space.channels:
        raise BundleError(f"{source} has {config['latent_channels']} latent channels; latent space {space.name} has {space.channels}")
    encoder_graph, encoder = encoder_model(config, weights, space)
    decoder_graph, decoder = decoder_model(config, weights, space)
    _check_all_used(weights, [encoder_graph, decoder_graph])
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}-building-"))
    try:
        for name, model in (("vae_encoder", encoder), ("vae_decoder", decoder)):
            (staging / name).mkdir()
            onnx.save(model, str(staging / name / "model.onnx"))
            described = {**config, "_class_name": "AutoencoderTiny", "latent_space": space.name,
                         "scaling_factor": space.scaling_factor, "shift_factor": space.shift_factor, "raw_latents": True,
                         "exported_from": "AutoencoderTiny (sdlite.tae, numpy + onnx)"}
            (staging / name / CONFIG_FILE).write_text(json.dumps(described, indent=2))
        components = {name: manifests.component_entry(staging, name, dtype="fp32", validation_max_abs_diff=None)
                      for name in ("vae_encoder", "vae_decoder")}
        manifest = manifests.write(staging, {
            "model_id": manifests.weights_model_id(weights.items(), space=space.name, scaling=space.scaling_factor,
                                                   shift=space.shift_factor),
            "model_id_rule": "weights",
            "source": origin,
            "components": components,
            "latent_space": space.to_manifest(),
            "vae_class": "AutoencoderTiny",
            "scaling_factor": space.scaling_factor,
            "shift_factor": space.shift_factor,
            "latent_channels": config["latent_channels"],
            "downsample_factor": factor,
            "opset": OPSET,
            "dtype": "fp32",
            "uncond_embedding": None,
            "scheduler": None,
            "extra_files": [],
            "exporter": {"builder": "sdlite.tae", "onnx": onnx.__version__},
            **({"weights_sha256": weights_sha256} if weights_sha256 else {}),
        })
        manifests.seal(staging)
        manifests.install(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("built %s (%s, model id %s) from %s", output, space.name, manifest["model_id"], source)
    return manifest


def read_regular_size_check(path: Path) -> None:
    """Refuse a weights file that is not a regular file of at most MAX_WEIGHTS_BYTES before anything reads or hashes it."""
    import os
    import stat

    try:
        info = os.stat(path)
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {type(exc).__name__}: {exc}"[:300]) from None
    if not stat.S_ISREG(info.st_mode):
        raise BundleError(f"{path} is not a regular file")
    if info.st_size > MAX_WEIGHTS_BYTES:
        raise BundleError(f"{path} has {info.st_size} bytes, over the {MAX_WEIGHTS_BYTES} a TAE's weights may have")
