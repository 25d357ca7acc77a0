"""One stage of sdlite's pipeline on onnxruntime, in its own process (the speed benchmark's ORT side).

python -m bench.engine --bundle B --stage encode|unet|decode --size 512 --threads 2 [--tile N|none]"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np

from sdlite.tiling import DEFAULT_TILE


def run_stage(bundle: str, stage: str, size: int, threads: int, repeats: int, providers=None, tile: int | None = DEFAULT_TILE) -> dict:
    """tile: the VAE stages' tile in latent cells, None for one call. The unet stage is always one
    session call."""
    from sdlite import load_model
    from sdlite.model import feed_inputs

    rng = np.random.default_rng(0)
    model = load_model(bundle, threads=threads, providers=providers)
    component = {"encode": "vae_encoder", "decode": "vae_decoder", "unet": "unet"}[stage]
    started = time.perf_counter()
    session = model.session(component)
    load = time.perf_counter() - started
    latent = size // 8
    if stage == "encode":
        x = rng.uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
        call = lambda: model.encode(x, tile=tile)  # noqa: E731
    elif stage == "decode":
        z = rng.normal(0, 5, (1, 4, latent, latent)).astype(np.float32)
        call = lambda: model.decode(z, tile=tile)  # noqa: E731
    else:
        sample = rng.normal(0, 1, (1, 4, latent, latent)).astype(np.float32)
        text = model.uncond_embedding
        names = [i.name for i in session.get_inputs()]
        feed = feed_inputs(session, {names[0]: sample, "timestep": np.array(40, np.float32), "encoder_hidden_states": text})
        call = lambda: session.run(None, feed)  # noqa: E731
    call()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    import onnxruntime as ort

    return {"engine": "onnxruntime", "stage": stage, "tile": tile, "load_s": load, "run_s": times, "providers": session.get_providers(),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "onnxruntime": ort.__version__}


def stage_parser(prog: str, description: str, source: str, source_help: str) -> argparse.ArgumentParser:
    """The arguments both engines' stage processes take (the PyTorch side reuses this)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(source, required=True, help=source_help)
    parser.add_argument("--stage", choices=["encode", "unet", "decode"], required=True)
    parser.add_argument("--size", type=int, default=512, help="image side in pixels")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs after one warm-up")
    return parser


def _tile_arg(value: str) -> int | None:
    return None if value == "none" else int(value)


def main(argv=None) -> int:
    parser = stage_parser("python -m bench.engine", __doc__, "--bundle", "sdlite bundle")
    parser.add_argument("--providers", nargs="+")
    parser.add_argument("--tile", type=_tile_arg, default=DEFAULT_TILE,
                        help="VAE tile in latent cells, or none (default %(default)s, sdlite's default)")
    args = parser.parse_args(argv)
    row = run_stage(args.bundle, args.stage, args.size, args.threads, args.repeats, args.providers, args.tile)
    sys.stdout.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
