"""The TAE networks as madebyollin/taesd publishes them (NAME_encoder.pth + NAME_decoder.pth), in torch.

diffusers' AutoencoderTiny cannot hold TAEF2 (its inner blocks add a GroupNorm "pool" branch), so a folder
of published .pth files is loaded here instead: the same layers, named as AutoencoderTiny names them
(encoder.layers.N, decoder.layers.N), with AutoencoderTiny's encode/decode interface, so the rest of the
export (wrappers, torch.onnx, validation, the weights model id) treats it as one. The published Sequential
is read with torch.load(weights_only=True); the decoder's leading clamp (index 0) is applied in decode().
This is also the reference network sdlite.tae's torch-free graph is tested against.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from sdlite.tae import POOL_GROUPS, POOL_WIDTH, STANDARD_CONFIG, from_original_layout, pth_files, space_of_name

from .errors import ExportError

CLASS_NAME = "TAEOriginal"


def _modules(latent_channels: int, pool: bool):
    import torch
    from torch import nn

    def conv(n_in, n_out, **kwargs):
        return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)

    class Block(nn.Module):
        def __init__(self, n, with_pool):
            super().__init__()
            self.conv = nn.Sequential(conv(n, n), nn.ReLU(), conv(n, n), nn.ReLU(), conv(n, n))
            self.skip = nn.Identity()
            self.fuse = nn.ReLU()
            self.pool = None
            if with_pool:
                wide = POOL_WIDTH * n
                self.pool = nn.Sequential(nn.Conv2d(n, wide, 1, bias=False), nn.GroupNorm(POOL_GROUPS, wide), nn.ReLU(),
                                          nn.Conv2d(wide, n, 1, bias=False))

        def forward(self, x):
            if self.pool is not None:
                x = x + self.pool(x)
            return self.fuse(self.conv(x) + self.skip(x))

    widths, blocks = STANDARD_CONFIG["encoder_block_out_channels"], STANDARD_CONFIG["num_encoder_blocks"]
    encoder = [conv(3, widths[0])]
    for stage, (width, count) in enumerate(zip(widths, blocks)):
        if stage:
            encoder.append(conv(width, width, stride=2, bias=False))
        encoder += [Block(width, pool and stage == len(widths) - 1) for _ in range(count)]
    encoder.append(conv(widths[-1], latent_channels))
    widths, blocks = STANDARD_CONFIG["decoder_block_out_channels"], STANDARD_CONFIG["num_decoder_blocks"]
    decoder = [conv(latent_channels, widths[0]), nn.ReLU()]
    for stage, (width, count) in enumerate(zip(widths, blocks)):
        decoder += [Block(width, pool and stage == 0) for _ in range(count)]
        final = stage == len(widths) - 1
        if not final:
            decoder.append(nn.Upsample(scale_factor=2))
        decoder.append(conv(width, 3 if final else width, bias=final))

    class Half(nn.Module):
        def __init__(self, layers):
            super().__init__()
            self.layers = nn.Sequential(*layers)

    class TAEOriginal(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder, self.decoder = Half(encoder), Half(decoder)

        def encode(self, sample):
            return SimpleNamespace(latents=self.encoder.layers(sample.add(1).div(2)))

        def decode(self, latents):
            return SimpleNamespace(sample=self.decoder.layers(torch.tanh(latents / 3) * 3).mul(2).sub(1))

    return TAEOriginal()


def is_original_folder(source) -> bool:
    return source is not None and Path(source).is_dir() and pth_files(Path(source)) is not None


def load(folder) -> object:
    """The torch network of a folder of published .pth files, with its weights and an AutoencoderTiny-like config."""
    import torch

    pair = pth_files(Path(folder))
    if pair is None:
        raise ExportError(f"{folder} does not hold one NAME_encoder.pth and NAME_decoder.pth pair")
    tensors = [{k: v.float().numpy() for k, v in torch.load(p, map_location="cpu", weights_only=True).items()} for p in pair]
    weights = from_original_layout(*tensors)
    latent_channels = int(weights["encoder.layers.14.weight"].shape[0]) if "encoder.layers.14.weight" in weights else None
    if latent_channels is None:
        raise ExportError(f"{folder}: the encoder has no final convolution (encoder.layers.14); not a published TAE")
    pool = any(".pool." in name for name in weights)
    model = _modules(latent_channels, pool)
    state = {name: torch.from_numpy(array) for name, array in weights.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ExportError(f"{folder}: the weights do not fit the published TAE network (missing {missing[:3]}, unexpected {unexpected[:3]})")
    model.eval()
    name = pair[0].name[: -len("_encoder.pth")]
    model.config = SimpleNamespace(**STANDARD_CONFIG, latent_channels=latent_channels, midblock_pool=pool, _class_name=CLASS_NAME,
                                   _name_or_path=name, scaling_factor=1.0)
    model.space_name = space_of_name(name)
    return model
