"""Tiny random AutoencoderTiny folders (config.json + safetensors) written with numpy alone, for the
torch-free builder's tests (the layer names are diffusers' own: a test loads them with diffusers too)."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np

TINY_CONFIG = {
    "_class_name": "AutoencoderTiny",
    "act_fn": "relu",
    "encoder_block_out_channels": [8, 8, 8, 8],
    "decoder_block_out_channels": [8, 8, 8, 8],
    "num_encoder_blocks": [1, 1, 1, 1],
    "num_decoder_blocks": [1, 1, 1, 1],
    "in_channels": 3,
    "out_channels": 3,
    "latent_channels": 4,
    "latent_magnitude": 3,
    "latent_shift": 0.5,
    "scaling_factor": 1.0,
    "shift_factor": 0.0,
    "upsample_fn": "nearest",
    "upsampling_scaling_factor": 2,
    "force_upcast": False,
}


def tiny_weights(config: dict, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights with the names and shapes of diffusers' AutoencoderTiny for `config`."""
    rng = np.random.default_rng(seed)
    weights = {}

    def conv(name, cin, cout, kernel=3, bias=True):
        weights[f"{name}.weight"] = rng.normal(0, (2 / (cin * kernel * kernel)) ** 0.5, (cout, cin, kernel, kernel)).astype(np.float32)
        if bias:
            weights[f"{name}.bias"] = rng.normal(0, 0.01, cout).astype(np.float32)

    def block(name, width):
        for i in (0, 2, 4):
            conv(f"{name}.conv.{i}", width, width)

    layer = 0
    for stage, (width, count) in enumerate(zip(config["encoder_block_out_channels"], config["num_encoder_blocks"])):
        conv(f"encoder.layers.{layer}", 3 if stage == 0 else width, width, bias=stage == 0)
        layer += 1
        for _ in range(count):
            block(f"encoder.layers.{layer}", width)
            layer += 1
    conv(f"encoder.layers.{layer}", config["encoder_block_out_channels"][-1], config["latent_channels"])
    widths = config["decoder_block_out_channels"]
    conv("decoder.layers.0", config["latent_channels"], widths[0])
    layer = 2
    for stage, (width, count) in enumerate(zip(widths, config["num_decoder_blocks"])):
        for _ in range(count):
            block(f"decoder.layers.{layer}", width)
            layer += 1
        final = stage == len(widths) - 1
        if not final:
            layer += 1  # the Upsample module has no parameters
        conv(f"decoder.layers.{layer}", width, 3 if final else width, bias=final)
        layer += 1
    return weights


def write_safetensors(path: Path, tensors: dict[str, np.ndarray], *, dtype: str = "F32", header_extra: dict | None = None) -> None:
    header, chunks, offset = {}, [], 0
    numpy_dtype = {"F32": "<f4", "F16": "<f2"}[dtype]
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array, dtype=numpy_dtype).tobytes()
        header[name] = {"dtype": dtype, "shape": list(array.shape), "data_offsets": [offset, offset + len(raw)]}
        chunks.append(raw)
        offset += len(raw)
    header.update(header_extra or {})
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + b"".join(chunks))


def write_tae_folder(folder: Path, *, config: dict | None = None, seed: int = 0, weights: dict | None = None) -> Path:
    config = dict(config or TINY_CONFIG)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    write_safetensors(folder / "diffusion_pytorch_model.safetensors", weights if weights is not None else tiny_weights(config, seed))
    return folder
