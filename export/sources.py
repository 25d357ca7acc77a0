"""Loading the PyTorch components to export: from the Hugging Face hub, a local diffusers folder, or
the tiny random pipeline. Network failures become one ExportError that names the offline options."""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from .errors import ExportError

log = logging.getLogger("export")

DEFAULT_MODEL = "stable-diffusion-v1-5/stable-diffusion-v1-5"
OFFLINE_HINT = (
    "offline, export a local diffusers folder with --model PATH (or a local VAE folder with --vae PATH), "
    "or build a test bundle with --tiny"
)
HUB_PROBE_TIMEOUT = 5.0


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT) -> bool:
    """Can we open a TCP connection to the hub ($HF_ENDPOINT or huggingface.co)? False when offline mode is set."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout):
            return True
    except OSError:
        return False


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def _load(loader, source: str, what: str, **kwargs):
    """Call a from_pretrained, turning hub/network/missing-file errors into one clear ExportError."""
    local = Path(source).exists()
    try:
        return loader(source, **kwargs)
    except (OSError, ValueError) as exc:
        if local:
            raise ExportError(f"cannot load the {what} from {source}: {_first_line(exc)}") from None
        if kwargs.get("local_files_only"):
            raise ExportError(
                f"the Hugging Face hub is unreachable from this machine and {source!r} is not in the local cache; {OFFLINE_HINT}"
            ) from None
        raise ExportError(
            f"cannot fetch the {what} of {source!r} from the Hugging Face hub (unreachable, unknown id, or gated "
            f"model: {_first_line(exc)}); {OFFLINE_HINT}"
        ) from None
    except Exception as exc:  # requests/httpx connection errors do not all derive from OSError
        if local or "connect" not in type(exc).__name__.lower() + str(exc).lower():
            raise
        raise ExportError(f"cannot reach the Hugging Face hub for {source!r} ({_first_line(exc)}); {OFFLINE_HINT}") from None


def _check_local(source: str) -> None:
    path = Path(source)
    if path.exists() and not ((path / "model_index.json").is_file() or (path / "vae").is_dir()):
        raise ExportError(
            f"{source} is not a diffusers pipeline folder (no model_index.json or vae/ inside); for a VAE folder alone "
            "(config.json of an AutoencoderKL or AutoencoderTiny), pass it as --vae with --components vae_encoder vae_decoder"
        )


VAE_CLASSES = ("AutoencoderKL", "AutoencoderTiny")


def _vae_class_name(source: str, offline: bool, **kwargs) -> tuple[str, dict]:
    """The VAE's class and load arguments: a hub id or folder holding config.json, or a pipeline folder with vae/."""
    from diffusers import AutoencoderKL

    path = Path(source)
    if path.exists():
        if (path / "config.json").is_file():
            config_path, extra = path / "config.json", {}
        elif (path / "vae" / "config.json").is_file():
            config_path, extra = path / "vae" / "config.json", {"subfolder": "vae"}
        else:
            raise ExportError(
                f"{source} is neither a VAE folder (config.json of an AutoencoderKL or AutoencoderTiny) nor a pipeline folder with vae/"
            )
        try:
            name = json.loads(config_path.read_text()).get("_class_name")
        except (OSError, ValueError) as exc:
            raise ExportError(f"cannot read {config_path}: {exc}") from None
    else:
        extra = {"local_files_only": True} if offline else {}
        config = _load(AutoencoderKL.load_config, source, "VAE configuration", **extra, **kwargs)
        name = config.get("_class_name")
    if name not in VAE_CLASSES:
        raise ExportError(f"the VAE at {source} is a {name or 'model of unknown class'}; sdlite exports {' or '.join(VAE_CLASSES)}")
    return name, extra


def load_vae(source: str, *, offline: bool, subfolder: str | None = None, **kwargs):
    """An AutoencoderKL or AutoencoderTiny from a hub id, a VAE folder or a pipeline folder (vae/)."""
    import diffusers

    if subfolder:
        kwargs["subfolder"] = subfolder
        name = "AutoencoderKL"
        if Path(source).exists() and (Path(source) / subfolder / "config.json").is_file():
            name = json.loads((Path(source) / subfolder / "config.json").read_text()).get("_class_name", name)
        extra = {}
    else:
        name, extra = _vae_class_name(source, offline, **kwargs)
    loader = getattr(diffusers, name if name in VAE_CLASSES else "AutoencoderKL").from_pretrained
    return _load(loader, source, "VAE", **extra, **kwargs)


def load_components(source: str, *, revision: str | None = None, vae: str | None = None, need_unet: bool = True) -> dict:
    """PyTorch vae (+ unet, text_encoder, tokenizer and the scheduler config when need_unet). With `vae`
    and no U-Net, the pipeline `source` is not read at all (a VAE bundle needs nothing else from it)."""
    from diffusers import DDIMScheduler, UNet2DConditionModel

    if need_unet or not vae:
        _check_local(source)
    common: dict = {"revision": revision} if revision else {}
    wanted = [vae] if vae else []
    if need_unet or not vae:
        wanted.append(source)
    offline = any(not Path(s).exists() for s in wanted) and not hub_reachable()
    if offline:
        log.warning("the Hugging Face hub is unreachable: using only the local cache")
        common["local_files_only"] = True
    parts: dict = {}
    if vae:
        parts["vae"] = load_vae(vae, offline=offline)
    else:
        parts["vae"] = load_vae(source, offline=offline, subfolder="vae", **common)
    if need_unet:
        from transformers import CLIPTextModel, CLIPTokenizer

        parts["scheduler"] = _load(DDIMScheduler.from_pretrained, source, "scheduler config", subfolder="scheduler", **common)
        parts["unet"] = _load(UNet2DConditionModel.from_pretrained, source, "U-Net", subfolder="unet", **common)
        parts["text_encoder"] = _load(CLIPTextModel.from_pretrained, source, "text encoder", subfolder="text_encoder", **common)
        parts["tokenizer"] = _load(CLIPTokenizer.from_pretrained, source, "tokenizer", subfolder="tokenizer", **common)
        if vae:  # the pipeline's own VAE names the latent space its U-Net works in
            parts["pipeline_vae_config"] = _load(
                __import__("diffusers").AutoencoderKL.load_config, source, "VAE configuration", subfolder="vae", **common
            )
    for name in ("vae", "unet", "text_encoder"):
        if name in parts:
            parts[name].eval()
    return parts


def uncond_embedding(text_encoder, tokenizer):
    """The empty-prompt embedding (1, max_length, hidden) that the U-Net is conditioned on at decode."""
    import torch

    ids = tokenizer("", padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return text_encoder(ids)[0].float().numpy()
