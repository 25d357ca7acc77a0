"""python -m export.random_pipeline: save a diffusers folder with the full-size SD 1.5 architecture and
random weights (built from its configs, offline). Same compute as the real model, for speed and memory
benchmarks; export it with `python -m export --model FOLDER --output models/sd15-random`."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from .tiny import TINY_SEED, tiny_tokenizer

log = logging.getLogger("export")

SD15_TEXT = {"vocab_size": 49408, "hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
             "num_attention_heads": 12, "max_position_embeddings": 77, "hidden_act": "quick_gelu", "projection_dim": 768}
SD15_VAE = {"in_channels": 3, "out_channels": 3, "latent_channels": 4, "block_out_channels": (128, 256, 512, 512),
            "down_block_types": ("DownEncoderBlock2D",) * 4, "up_block_types": ("UpDecoderBlock2D",) * 4,
            "layers_per_block": 2, "sample_size": 512, "scaling_factor": 0.18215}
SD15_UNET = {"sample_size": 64, "in_channels": 4, "out_channels": 4, "cross_attention_dim": 768, "attention_head_dim": 8,
             "block_out_channels": (320, 640, 1280, 1280), "layers_per_block": 2}


def save_random_sd15(path) -> Path:
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(TINY_SEED)
    tokenizer = tiny_tokenizer()  # ids stay below SD's vocabulary size; the weights are random anyway
    pipeline = StableDiffusionPipeline(
        vae=AutoencoderKL(**SD15_VAE),
        unet=UNet2DConditionModel(**SD15_UNET),
        text_encoder=CLIPTextModel(CLIPTextConfig(**SD15_TEXT, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)),
        tokenizer=tokenizer,
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                                set_alpha_to_one=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipeline.save_pretrained(str(path))
    return Path(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.random_pipeline", description=__doc__)
    parser.add_argument("--output", required=True, help="folder to create")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if Path(args.output).exists():
        print(f"error: {args.output} exists", file=sys.stderr)
        return 2
    started = time.perf_counter()
    save_random_sd15(args.output)
    log.info("saved %s in %.1f s", args.output, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
