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


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB. VmHWM where Linux has it: ru_maxrss survives exec, so a
    child started by a big parent (pytest, a notebook) would report the parent's size at fork time."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_stage(bundle: str, stage: str, size: int, threads: int, repeats: int, providers=None, tile: int | None = DEFAULT_TILE,
              width: int | None = None, io_binding: bool = False, settings: dict | None = None) -> dict:
    """tile: the VAE stages' tile in latent cells, None for one call. The unet stage is always one
    session call. io_binding: inputs copied to the session's device once and outputs left there (what
    a GPU pipeline does between its stages); each stage is then one session call, timed to completion."""
    from sdlite import load_model
    from sdlite.model import feed_inputs

    rng = np.random.default_rng(0)
    component = {"encode": "vae_encoder", "decode": "vae_decoder", "unet": "unet"}[stage]
    started = time.perf_counter()
    model = load_model(bundle, threads=threads, providers=providers, session_settings=settings or None)
    session = model.session(component)
    load = time.perf_counter() - started
    height, width = size, width or size
    latent_h, latent_w = height // 8, width // 8
    names = [i.name for i in session.get_inputs()]
    if stage == "encode":
        feed = {names[0]: rng.uniform(-1, 1, (1, 3, height, width)).astype(np.float32)}
        call = lambda: model.encode(feed[names[0]], tile=tile)  # noqa: E731
    elif stage == "decode":
        feed = {names[0]: rng.normal(0, 5, (1, model.latent_channels, latent_h, latent_w)).astype(np.float32)}
        call = lambda: model.decode(feed[names[0]], tile=tile)  # noqa: E731
    else:
        sample = rng.normal(0, 1, (1, 4, latent_h, latent_w)).astype(np.float32)
        feed = feed_inputs(session, {names[0]: sample, "timestep": np.array(40, np.float32), "encoder_hidden_states": model.uncond_embedding})
        call = lambda: session.run(None, feed)  # noqa: E731
    if io_binding:
        call = _bound_call(session, feed)
    call()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    import onnxruntime as ort

    component_entry = ((model.manifest or {}).get("components") or {}).get(component) or {}
    return {"engine": "onnxruntime", "stage": stage, "tile": None if io_binding else tile, "io_binding": io_binding, "settings": settings or {},
            "bundle": str(bundle), "quantization": model.info.quantization, "dtype": component_entry.get("dtype", "fp32"),
            "optimization": (model.manifest or {}).get("optimization") is not None,
            "load_s": load,
            "run_s": times, "providers": session.get_providers(),
            "peak_rss_mb": peak_rss_mb(), "onnxruntime": ort.__version__}


def _bound_call(session, feed: dict):
    """A session call with inputs already on the session's first provider's device and outputs left there."""
    import onnxruntime as ort

    device = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
    binding = session.io_binding()
    for name, value in feed.items():
        value = np.asarray(value)  # np.ascontiguousarray would turn the 0-d timestep into shape (1,)
        binding.bind_ortvalue_input(name, ort.OrtValue.ortvalue_from_numpy(value if value.flags.c_contiguous else value.copy(), device, 0))
    for output in session.get_outputs():
        binding.bind_output(output.name, device)

    def call():
        session.run_with_iobinding(binding)
        binding.synchronize_outputs()

    return call


def stage_parser(prog: str, description: str, source: str, source_help: str) -> argparse.ArgumentParser:
    """The arguments both engines' stage processes take (the PyTorch side reuses this)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument(source, required=True, help=source_help)
    parser.add_argument("--stage", choices=["encode", "unet", "decode"], required=True)
    parser.add_argument("--size", type=int, default=512, help="image side in pixels (the height when --width is given)")
    parser.add_argument("--width", type=int, help="image width in pixels (default: --size)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=1, help="timed runs after one warm-up")
    return parser


def _tile_arg(value: str) -> int | None:
    return None if value == "none" else int(value)


def main(argv=None) -> int:
    parser = stage_parser("python -m bench.engine", __doc__, "--bundle", "sdlite bundle")
    parser.add_argument("--providers", nargs="+")
    parser.add_argument("--io-binding", action="store_true", help="inputs and outputs stay on the session's device (GPU runs)")
    parser.add_argument("--setting", action="append", default=[], metavar="NAME=on|off",
                        help="an onnxruntime session setting over sdlite's defaults (sdlite.sessions.default_settings), e.g. prepacking=off; repeatable")
    parser.add_argument("--tile", type=_tile_arg, default=DEFAULT_TILE,
                        help="VAE tile in latent cells, or none (default %(default)s, sdlite's default)")
    args = parser.parse_args(argv)
    settings = {}
    for item in args.setting:
        name, _, value = item.partition("=")
        settings[name] = value.lower() in ("on", "1", "true", "yes")
    row = run_stage(args.bundle, args.stage, args.size, args.threads, args.repeats, args.providers, args.tile, args.width, args.io_binding,
                    settings or None)
    sys.stdout.write(json.dumps(row) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
