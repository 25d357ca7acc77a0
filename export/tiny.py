"""A tiny random Stable Diffusion pipeline built locally (no network): same structure as SD 1.x
(4 latent channels, 8x downsampling, CLIP text encoder, cross-attention U-Net), a few MB of weights."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

TINY_SEED = 0
TINY_TEXT_DIM = 32
TINY_MAX_LENGTH = 77


def tiny_tokenizer():
    """A CLIPTokenizer with a byte-level vocabulary (512 byte tokens + 2 specials) and no merges."""
    from transformers import CLIPTokenizer
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    symbols = list(bytes_to_unicode().values())
    vocab = {s: i for i, s in enumerate(symbols + [s + "</w>" for s in symbols])}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "vocab.json").write_text(json.dumps(vocab))
        (Path(folder) / "merges.txt").write_text("#version: 0.2\n")
        return CLIPTokenizer(
            str(Path(folder) / "vocab.json"), str(Path(folder) / "merges.txt"), model_max_length=TINY_MAX_LENGTH
        )


def tiny_components() -> dict:
    """vae, unet, text_encoder, tokenizer, scheduler of a tiny random SD pipeline (seeded)."""
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(TINY_SEED)
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=64,
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=1,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TINY_TEXT_DIM,
        attention_head_dim=4,
        norm_num_groups=8,
    )
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=514,
            hidden_size=TINY_TEXT_DIM,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=TINY_MAX_LENGTH,
            bos_token_id=512,
            eos_token_id=513,
            pad_token_id=513,
            projection_dim=TINY_TEXT_DIM,
        )
    )
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False, steps_offset=1
    )
    for module in (vae, unet, text_encoder):
        module.eval()
    return {"vae": vae, "unet": unet, "text_encoder": text_encoder, "tokenizer": tiny_tokenizer(), "scheduler": scheduler}


def save_tiny_pipeline(path) -> Path:
    """Write the tiny pipeline as a diffusers folder (to test exporting from a local folder)."""
    from diffusers import StableDiffusionPipeline

    parts = tiny_components()
    pipeline = StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipeline.save_pretrained(str(path))
    return Path(path)
