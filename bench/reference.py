"""The PyTorch/diffusers reference of sdlite's pipeline stages, for the speed benchmark.

python -m bench.reference --pipeline FOLDER --stage encode|unet|decode --size 512 --threads 2
prints one JSON line: load seconds, per-run seconds, peak RSS. One process per stage, so that peak
memory belongs to that stage alone."""

from __future__ import annotations

import json
import sys
import time

from .engine import peak_rss_mb


def _vae_class(pipeline: str) -> str:
    """AutoencoderTiny for a folder holding its config.json (TAESD), else the pipeline's AutoencoderKL."""
    from pathlib import Path

    config = Path(pipeline) / "config.json"
    return json.loads(config.read_text()).get("_class_name", "AutoencoderKL") if config.is_file() else "AutoencoderKL"


def run_stage(pipeline: str, stage: str, size: int, threads: int, repeats: int, device: str = "cpu", dtype: str = "fp32",
              width: int | None = None, flops: bool = False) -> dict:
    """dtype fp16 applies to the U-Net only (as in the ONNX export: fp16 SD VAEs overflow). pipeline: a
    diffusers pipeline folder, or an AutoencoderTiny folder for the VAE stages (TAESD). flops: after the
    timed runs (and the peak RSS reading), one more call under torch's FlopCounterMode counts the
    stage's floating-point operations (a multiply-add is 2), the yardstick for the SGEMM share."""
    import numpy as np
    import torch
    from diffusers import AutoencoderKL, AutoencoderTiny, UNet2DConditionModel

    torch.set_num_threads(threads)
    half = stage == "unet" and dtype == "fp16"
    torch_dtype = torch.float16 if half else torch.float32

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    rng = np.random.default_rng(0)
    started = time.perf_counter()
    tiny = stage != "unet" and _vae_class(pipeline) == "AutoencoderTiny"
    if stage == "unet":
        model = UNet2DConditionModel.from_pretrained(pipeline, subfolder="unet").eval()
    elif tiny:
        model = AutoencoderTiny.from_pretrained(pipeline, torch_dtype=torch.float32).eval()
    else:
        model = AutoencoderKL.from_pretrained(pipeline, subfolder="vae").eval()
    model = model.to(device=device, dtype=torch_dtype)
    sync()
    load = time.perf_counter() - started
    height, width = size, width or size
    latent_h, latent_w = height // 8, width // 8
    if stage == "encode":
        x = torch.from_numpy(rng.uniform(-1, 1, (1, 3, height, width)).astype(np.float32)).to(device)
        call = (lambda: model.encode(x).latents) if tiny else (lambda: model.encode(x).latent_dist.mean)  # noqa: E731
    elif stage == "decode":
        z = torch.from_numpy(rng.normal(0, 5 * (0.18215 if tiny else 1), (1, 4, latent_h, latent_w)).astype(np.float32)).to(device)
        call = lambda: model.decode(z).sample  # noqa: E731
    else:
        sample = torch.from_numpy(rng.normal(0, 1, (1, 4, latent_h, latent_w)).astype(np.float32)).to(device, torch_dtype)
        text = torch.from_numpy(rng.normal(0, 1, (1, 77, model.config.cross_attention_dim)).astype(np.float32)).to(device, torch_dtype)
        call = lambda: model(sample, torch.tensor(40.0, device=device), encoder_hidden_states=text).sample  # noqa: E731
    times = []
    with torch.no_grad():
        call()  # warm-up
        sync()
        for _ in range(repeats):
            t0 = time.perf_counter()
            call()
            sync()
            times.append(time.perf_counter() - t0)
    row = {"engine": "torch", "stage": stage, "load_s": load, "run_s": times, "device": device, "dtype": "fp16" if half else "fp32",
           "peak_rss_mb": peak_rss_mb(), "torch": torch.__version__}
    if flops:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with torch.no_grad(), counter:
            call()
        row["flops"] = counter.get_total_flops()
    return row


def main(argv=None) -> int:
    from .engine import stage_parser

    parser = stage_parser("python -m bench.reference", __doc__, "--pipeline", "diffusers folder")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda")
    parser.add_argument("--dtype", choices=["fp32", "fp16"], default="fp32", help="fp16 applies to the U-Net only")
    parser.add_argument("--flops", action="store_true", help="also count the stage's FLOPs (one more call)")
    args = parser.parse_args(argv)
    print(json.dumps(run_stage(args.pipeline, args.stage, args.size, args.threads, args.repeats, args.device, args.dtype, args.width,
                               args.flops)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
