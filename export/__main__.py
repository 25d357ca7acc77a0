"""python -m export: convert Stable Diffusion's VAE (and U-Net) into an sdlite ONNX bundle."""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from . import COMPONENTS, DEFAULT_MODEL, DTYPES, ExportError, export_bundle
from sdlite.latent_space import KNOWN as KNOWN_SPACES

from .bundle import DEFAULT_OPSET
from .cli_support import run_task

log = logging.getLogger("export")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m export",
        description="Export Stable Diffusion's VAE encoder/decoder and U-Net to an ONNX bundle for sdlite.",
        epilog="Offline (no hub): --model PATH exports a local diffusers folder; --tiny builds a tiny random "
        "pipeline for tests. Example: python -m export --tiny --output models/tiny",
    )
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"Hugging Face model id or local diffusers pipeline folder (default: {DEFAULT_MODEL})")
    parser.add_argument("--revision", help="hub revision (branch, tag or commit) of --model")
    parser.add_argument("--vae", metavar="ID_OR_DIR",
                        help="use another VAE: an AutoencoderKL such as stabilityai/sd-vae-ft-mse (better faces and text), or an "
                        "AutoencoderTiny such as madebyollin/taesd (10 MB, fast previews), or a folder of published TAE .pth files such as "
                        "taef2_encoder.pth + taef2_decoder.pth (TAEF2, FLUX.2); alone with --components vae_encoder vae_decoder")
    parser.add_argument("--latent-space", choices=[s.name for s in KNOWN_SPACES],
                        help="the VAE's latent space when its config cannot tell (AutoencoderTiny: default the pipeline's, else sd1)")
    parser.add_argument("--tiny", action="store_true", help="build a tiny random SD pipeline locally (no network; for tests and offline demos)")
    parser.add_argument("--output", "-o", required=True, help="bundle folder to create, e.g. models/sd15")
    parser.add_argument("--components", nargs="+", choices=COMPONENTS, default=list(COMPONENTS), metavar="NAME",
                        help=f"components to export (default: all): {', '.join(COMPONENTS)}; VAE-only skips the 3.4 GB U-Net")
    parser.add_argument("--dtype", choices=DTYPES, default="fp32", help="fp16 exports the U-Net in half precision for GPUs; the VAE stays fp32 (fp16 SD VAEs overflow)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    parser.add_argument("--no-validate", action="store_true", help="skip the comparison of each ONNX file with PyTorch")
    parser.add_argument("--atol", type=float, help="validation tolerance: max abs difference relative to max(1, |output|) (default 2e-3; 5e-2 for an fp16 U-Net)")
    parser.add_argument("--optimize", nargs="?", const="cpu", choices=["cpu", "cuda"],
                        help="store onnxruntime's fused graphs (attention, layer norms) for this target (default target: cpu)")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle at --output")
    parser.add_argument("--quiet", "-q", action="store_true", help="only print errors")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    for name in ("optimum", "transformers", "diffusers", "torch", "huggingface_hub"):  # their chatter drowns our progress
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=Warning, module=r"(torch|optimum|diffusers|transformers)\b.*")

    def progress(component, event, seconds):
        if event == "start":
            log.info("exporting %s ...", component)
        else:
            log.info("exported %s in %.1f s", component, seconds)

    return run_task(
        lambda: export_bundle(
            args.output, model=args.model, revision=args.revision, vae=args.vae, tiny=args.tiny,
            components=args.components, dtype=args.dtype, opset=args.opset, validate=not args.no_validate,
            atol=args.atol, force=args.force, latent_space=args.latent_space, optimize=args.optimize, progress=progress,
        ),
        lambda manifest: f"{args.output}: model id {manifest['model_id']}, components {', '.join(manifest['components'])}",
    )

if __name__ == "__main__":
    sys.exit(main())
