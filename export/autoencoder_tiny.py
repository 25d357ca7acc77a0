"""diffusers' AutoencoderTiny (TAESD and its kin) to ONNX.

optimum's exporters know AutoencoderKL but not AutoencoderTiny, so this module exports it with
torch.onnx itself, following the conventions optimum uses for a VAE and that sdlite reads:

- the optimum layout: vae_encoder/model.onnx and vae_decoder/model.onnx, each with config.json;
- the same names: `sample` [B,3,H,W] in [-1,1] -> `latent_parameters` [B,2C,H/8,W/8] (mean, then a
  constant logvar of LOGVAR: the encoder is deterministic), and `latent_sample` [B,C,h,w] -> `sample`;
- the same opset and dynamic axes (batch, height, width);
- raw latents in and out: AutoencoderTiny works in the U-Net's space (its latents are already multiplied
  by the latent space's scaling factor, and its config says 1.0), so the encoder's output is divided by
  the latent space's scaling factor and the decoder's input multiplied by it, as the full SD VAE's
  exports do. A stream's latents then mean the same whichever decoder of the space reads them.
"""

from __future__ import annotations

import json
from pathlib import Path

from sdlite.tae import LOGVAR, TINY_AUTOENCODERS, space_of_name  # noqa: F401 - one definition, shared with the torch-free builder

from .errors import ExportError
from .tae_original import CLASS_NAME


def is_autoencoder_tiny(vae) -> bool:
    """diffusers' AutoencoderTiny, or the published TAE network (export.tae_original: TAEF2 and the .pth releases)."""
    return type(vae).__name__ in ("AutoencoderTiny", CLASS_NAME)


def check_latent_space(vae, space) -> None:
    """An AutoencoderTiny must have the latent space's channel count (TAESD: 4 for SD 1.x and SDXL)."""
    channels = int(vae.config.latent_channels)
    if channels != space.channels:
        raise ExportError(
            f"this AutoencoderTiny has {channels} latent channels but latent space {space.name} has {space.channels}; "
            f"pass --latent-space with the space it was trained for ({', '.join(_spaces_with(channels)) or 'none known'})"
        )


def _spaces_with(channels: int) -> list[str]:
    from sdlite import latent_space

    return [s.name for s in latent_space.KNOWN if s.channels == channels]


def wrappers(vae, scaling_factor: float, shift_factor: float | None):
    """torch modules computing what the exported encoder and decoder compute (for export and validation)."""
    import torch

    shift = float(shift_factor or 0.0)

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vae = vae

        def forward(self, sample):
            mean = self.vae.encode(sample).latents / scaling_factor + shift
            return torch.cat([mean, torch.full_like(mean, LOGVAR)], dim=1)

    class Decoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.vae = vae

        def forward(self, latent_sample):
            return self.vae.decode((latent_sample - shift) * scaling_factor).sample

    return Encoder().eval(), Decoder().eval()


def export_components(vae, components: list[str], folder: Path, *, space, opset: int, on_component=None) -> None:
    """Write folder/vae_encoder and/or folder/vae_decoder (model.onnx + config.json) for an AutoencoderTiny."""
    import time

    import torch

    encoder, decoder = wrappers(vae, space.scaling_factor, space.shift_factor)
    channels = int(vae.config.latent_channels)
    specs = {
        "vae_encoder": (encoder, torch.zeros(1, 3, 64, 64), "sample", "latent_parameters"),
        "vae_decoder": (decoder, torch.zeros(1, channels, 8, 8), "latent_sample", "sample"),
    }
    for name in components:
        if name not in specs:
            continue
        started = time.perf_counter()
        if on_component:
            on_component(name, "start", 0.0)
        module, example, input_name, output_name = specs[name]
        target = folder / name / "model.onnx"
        target.parent.mkdir(parents=True, exist_ok=True)
        axes = {0: "batch_size", 2: "height", 3: "width"}
        with torch.no_grad():
            torch.onnx.export(module, (example,), str(target), input_names=[input_name], output_names=[output_name],
                              dynamic_axes={input_name: axes, output_name: axes}, opset_version=opset, dynamo=False)
        config = dict(vae.config) if isinstance(vae.config, dict) else dict(vars(vae.config))
        config.update({"latent_space": space.name, "scaling_factor": space.scaling_factor, "shift_factor": space.shift_factor,
                       "raw_latents": True, "exported_from": "AutoencoderTiny (sdlite export, torch.onnx)"})
        (folder / name / "config.json").write_text(json.dumps(config, indent=2, default=str))
        if on_component:
            on_component(name, "done", time.perf_counter() - started)
