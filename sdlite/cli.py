"""python -m sdlite: compress / decompress / info, on single files or whole folders."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from .codec import DEFAULT_METHOD, compress, decompress, info
from .errors import ModelNotFoundError, OptionError, SdliteError
from .methods import METHOD_NAMES
from .bitstream import DEFAULT_MAX_PIXELS
from .models import load_model
from .tiling import DEFAULT_TILE, check_tile

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
SDZ_SUFFIX = ".sdz"
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def expand_inputs(inputs: list[str], suffixes: set[str]) -> list[Path]:
    """Files named on a command line: folders expand to their files with one of `suffixes`, sorted."""
    files: list[Path] = []
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in suffixes)
        else:
            files.append(path)
    return files


def _targets(files: list[Path], args, suffix: str) -> list[Path]:
    if args.output:
        if len(files) != 1:
            raise OptionError(f"-o names one output but there are {len(files)} inputs; use --out-dir DIR")
        return [Path(args.output)]
    folder = Path(args.out_dir) if args.out_dir else None
    if folder:
        folder.mkdir(parents=True, exist_ok=True)
    return [(folder or f.parent) / (f.stem + suffix) for f in files]


def _progress(done: int, total: int, name: str, detail: str) -> None:
    width = 24
    filled = width * done // max(total, 1)
    sys.stderr.write(f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {name}: {detail}\n")


def _run_batch(files, targets, work, args) -> int:
    failures = 0
    total_in = total_out = pixels = 0
    started = time.perf_counter()
    for i, (source, target) in enumerate(zip(files, targets), 1):
        if target.exists() and not args.force:
            failures += 1
            _progress(i, len(files), source.name, f"skipped: {target} exists (use --force to replace)")
            continue
        t0 = time.perf_counter()
        try:
            size_in, size_out, area, compressed = work(source, target)
        except (SdliteError, OSError) as exc:
            failures += 1
            _progress(i, len(files), source.name, f"error: {exc}")
            continue
        total_in += size_in
        total_out += size_out
        pixels += area
        _progress(i, len(files), source.name, f"{size_in} -> {size_out} bytes, {8 * compressed / area if area else 0:.4f} bpp, {time.perf_counter() - t0:.2f} s")
    done = len(files) - failures
    sys.stderr.write(
        f"{done} of {len(files)} files, {total_in} -> {total_out} bytes, {time.perf_counter() - started:.1f} s"
        + (f", {failures} failed" if failures else "") + "\n"
    )
    return EXIT_FAILED if failures else EXIT_OK


def _cmd_compress(args) -> int:
    files = expand_inputs(args.inputs, IMAGE_SUFFIXES)
    if not files:
        raise OptionError("no input images found")
    targets = _targets(files, args, SDZ_SUFFIX)
    check_tile(args.tile)
    model = load_model(args.model, providers=args.providers, threads=args.threads)

    def work(source: Path, target: Path):
        stats: dict = {}
        data = compress(source, model=model, method=args.method, target_bytes=args.target_bytes, quality=args.quality,
                        max_pixels=args.max_pixels, tile=args.tile, stats=stats)
        target.write_bytes(data)
        return source.stat().st_size, len(data), stats["width"] * stats["height"], len(data)

    return _run_batch(files, targets, work, args)


def _cmd_decompress(args) -> int:
    files = expand_inputs(args.inputs, {SDZ_SUFFIX})
    if not files:
        raise OptionError("no .sdz inputs found")
    targets = _targets(files, args, ".png")
    check_tile(args.tile)
    model = load_model(args.model, providers=args.providers, threads=args.threads)

    def work(source: Path, target: Path):
        data = source.read_bytes()
        image = decompress(data, model=model, denoise=args.denoise, denoise_steps=args.steps, seed=args.seed,
                           max_pixels=args.max_pixels, tile=args.tile)
        image.save(target)
        return len(data), target.stat().st_size, image.width * image.height, len(data)

    return _run_batch(files, targets, work, args)


def _cmd_info(args) -> int:
    status = EXIT_OK
    for path in expand_inputs(args.inputs, {SDZ_SUFFIX}):
        try:
            print(json.dumps({"file": str(path), **info(path.read_bytes())}))
        except (SdliteError, OSError) as exc:
            print(f"{path}: error: {exc}", file=sys.stderr)
            status = EXIT_FAILED
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sdlite", description="Image codec in Stable Diffusion's latent space.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p, outputs=True):
        p.add_argument("inputs", nargs="+", help="files or folders")
        p.add_argument("--model", help="bundle path or name under models/ (default: $SDLITE_MODEL, else the only bundle in models/)")
        p.add_argument("--providers", nargs="+", help="onnxruntime providers, e.g. CPUExecutionProvider (default: CUDA if available, else CPU)")
        p.add_argument("--threads", type=int, help="intra-op threads for onnxruntime")
        if outputs:
            out = p.add_mutually_exclusive_group()
            out.add_argument("-o", "--output", help="output file (one input only)")
            out.add_argument("--out-dir", help="folder for outputs (default: beside each input)")
            p.add_argument("--force", action="store_true", help="replace existing outputs")
            p.add_argument("--tile", type=int, default=DEFAULT_TILE, metavar="CELLS",
                           help=f"run the networks by overlapping tiles of this many latent cells a side on larger images (default {DEFAULT_TILE})")
            p.add_argument("--no-tile", dest="tile", action="store_const", const=None, help="never tile (needs more memory on large images)")
            p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                           help=f"refuse images larger than this many pixels (default {DEFAULT_MAX_PIXELS})")

    c = sub.add_parser("compress", help="images -> .sdz")
    common(c)
    c.add_argument("--method", choices=list(METHOD_NAMES.values()), default=DEFAULT_METHOD, help=f"codec method (default {DEFAULT_METHOD})")
    c.add_argument("--target-bytes", type=int, help="size budget per image (method entropy)")
    c.add_argument("--quality", type=int, help="1..100, larger is bigger and better (method entropy)")
    d = sub.add_parser("decompress", help=".sdz -> PNG")
    common(d)
    d.add_argument("--denoise", action=argparse.BooleanOptionalAction, default=None, help="run the U-Net denoising steps (default: when the bundle has a U-Net)")
    d.add_argument("--steps", type=int, default=2, help="U-Net steps when denoising (default 2)")
    d.add_argument("--seed", type=int, default=0, help="noise seed for denoising (default 0)")
    i = sub.add_parser("info", help="print .sdz headers as JSON lines (no model needed)")
    i.add_argument("inputs", nargs="+")
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on bad usage (2)
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    commands = {"compress": _cmd_compress, "decompress": _cmd_decompress, "info": _cmd_info}
    try:
        return commands[args.command](args)
    except (OptionError, ModelNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SdliteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


__all__ = ["main"]
