"""python -m sdlite: compress / decompress / info, on single files or whole folders.

Outputs are written to a temporary file beside the target and moved into place in one step, so no
partial file ever carries a final name; without --force an existing output is never replaced, even by
another run writing into the same folder at the same time. Ctrl-C ends a batch with exit code 130.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import secrets
import stat
import sys
import time
import warnings
from pathlib import Path

from PIL import Image

from . import options as request_options
from .bitstream import read_file, read_header_file
from .registry import AUTO_MODEL, available_models, choose_model, models_dir, resolve_model_path
from .codec import DECODER_MISMATCH, MAX_SEED, compress, decompress, describe, info
from . import __version__, codec_decoders, sessions, tae
from . import manifest as manifests
from .bundle import is_bundle, read_bundle
from .images import load_rgb
from .tae import is_tae_folder
from .errors import DecoderNote, ModelNotFoundError, OptionError, SdliteError
from .model import load_model
from .options import CompressOptions
from .scheduler import DEFAULT_STEPS

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".ppm", ".pgm"}
OUTPUT_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF",
                  ".ppm": "PPM"}
"""Decompressed images are written in the format their name asks for (an unknown extension is refused)."""
SDZ_SUFFIX = ".sdz"
DECODED_SUFFIX = ".decoded.png"
"""Decoded outputs are named NAME.decoded.png by default: never the original's name (photo.png -> photo.sdz -> photo.decoded.png)."""
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


class OutputExists(Exception):
    """The target appeared (or was there) and --force was not given."""


def expand_inputs(inputs: list[str], suffixes: set[str]) -> list[Path]:
    """Files named on a command line: folders expand to their entries with one of `suffixes`, sorted. Nothing
    is dropped silently: an entry that is not a regular file (a FIFO, a device, a link loop) and a folder that
    cannot be listed stay in the list, and the batch reports each on its own line and goes on."""
    files: list[Path] = []
    for name in inputs:
        path = Path(name)
        try:
            is_dir = path.is_dir()
        except OSError:
            is_dir = False
        if not is_dir:
            files.append(path)
            continue
        try:
            entries = sorted(path.iterdir())
        except OSError:
            files.append(path)  # cannot be listed: reported by the batch
            continue
        files += [p for p in entries if p.suffix.lower() in suffixes]
    return files


def _targets(files: list[Path], args, suffix: str) -> list[Path]:
    if args.output:
        if len(files) != 1:
            raise OptionError(f"-o names one output but there are {len(files)} inputs; use --out-dir DIR")
        return [Path(args.output)]
    folder = Path(args.out_dir) if args.out_dir else None
    if folder:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OptionError(f"cannot create --out-dir {folder}: {exc.strerror or exc}") from None
    targets = [(folder or f.parent) / (f.stem + suffix) for f in files]
    seen: dict[str, Path] = {}
    clashes = []
    for source, target in zip(files, targets):
        key = os.path.normcase(os.path.abspath(target))
        if key in seen:
            clashes.append(f"{seen[key]} and {source} -> {target}")
        seen.setdefault(key, source)
    if clashes:
        raise OptionError("several inputs map to one output (rename them or use separate --out-dir folders): " + "; ".join(clashes))
    return targets


MAX_NAME_BYTES = 255  # most file systems' limit on one name


def _temporary_beside(target: Path):
    """A new file beside target, created with mode 0666 less the umask (as any new file would be). Its name
    stays within MAX_NAME_BYTES whatever the target's (a long name is shortened, not refused)."""
    stem = target.name.encode()[: MAX_NAME_BYTES - 20].decode(errors="ignore")
    for _ in range(100):
        candidate = target.parent / f".{stem}.{secrets.token_hex(6)}.part"
        try:
            return candidate, os.fdopen(os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "wb")
        except FileExistsError:
            continue
    raise OSError(f"cannot create a temporary file beside {target}")


def write_atomic(target: Path, write, *, force: bool) -> int:
    """Call write(file) on a temporary file beside `target`, then move it into place: os.replace with
    force, else a hard link that fails if the target exists (no-clobber in one step). Returns the size.
    A new file gets the umask's mode; a file replaced with force keeps its own mode; a target that is
    not a regular file (a FIFO, a device, a folder) is never replaced. The temporary file is removed
    whatever happens, Ctrl-C included."""
    target = Path(target)
    existing = None
    try:
        existing = os.stat(target)
    except FileNotFoundError:
        pass
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        raise OutputExists(f"{target} exists and is not a regular file; choose another output")
    temporary, handle = _temporary_beside(target)
    try:
        with handle:
            write(handle)
        size = temporary.stat().st_size
        if force:
            if existing is not None:
                os.chmod(temporary, stat.S_IMODE(existing.st_mode))
            os.replace(temporary, target)
            return size
        try:
            os.link(temporary, target)
        except FileExistsError:
            raise OutputExists(f"{target} exists (use --force to replace it)") from None
        except OSError:  # a file system without hard links: reserve the name exclusively, then replace
            try:
                os.close(os.open(target, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            except FileExistsError:
                raise OutputExists(f"{target} exists (use --force to replace it)") from None
            os.replace(temporary, target)
        return size
    finally:
        temporary.unlink(missing_ok=True)


def _printable(name: str) -> str:
    """A file name on one line: control characters (a newline in a name) shown escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in name)


def _progress(done: int, total: int, name: str, detail: str) -> None:
    width = 24
    filled = width * done // max(total, 1)
    sys.stderr.write(f"[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {_printable(name)}: {_printable(detail)}\n")


def _input_problem(source: Path) -> str | None:
    """Why an input cannot be read (not a regular file, cannot be listed or opened), or None."""
    try:
        mode = source.stat().st_mode
    except OSError as exc:
        return f"cannot read {source}: {exc.strerror or exc}"
    if stat.S_ISDIR(mode):
        return f"cannot list the folder {source}" if not os.access(source, os.R_OK | os.X_OK) else f"{source} is a folder"
    if not stat.S_ISREG(mode):
        return f"{source} is not a regular file (a FIFO, device or socket)"
    if not os.access(source, os.R_OK):
        return f"cannot read {source}: permission denied"
    return None


def _run_batch(files, targets, work, args) -> int:
    failures = done = skipped = 0
    total_in = total_out = pixels = compressed_bytes = 0
    started = time.perf_counter()
    try:
        for i, (source, target) in enumerate(zip(files, targets), 1):
            problem = _input_problem(source)
            if problem is None:
                try:
                    exists = target.exists()
                except OSError as exc:  # an unsearchable folder, a name too long, ...
                    problem = f"cannot write {target}: {exc.strerror or exc}"
            if problem is not None:
                failures += 1
                _progress(i, len(files), source.name or str(source), f"error: {problem}")
                continue
            if exists and not args.force:  # early skip; write_atomic makes the final check
                # an output that is there is kept and counts as done: a rerun (or a resumed batch) exits 0
                skipped += 1
                _progress(i, len(files), source.name, f"kept: {target} exists (--force replaces it)")
                continue
            t0 = time.perf_counter()
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    size_in, size_out, area, compressed = work(source, target)
            except OutputExists as exc:  # it appeared meanwhile (another run): kept, as above
                skipped += 1
                _progress(i, len(files), source.name, f"kept: {exc}")
                continue
            except (SdliteError, OSError) as exc:
                failures += 1
                _progress(i, len(files), source.name, f"error: {exc}")
                continue
            except Exception as exc:  # whatever one bad file does, the batch goes on to the next
                failures += 1
                _progress(i, len(files), source.name, f"error: {type(exc).__name__}: {exc}")
                continue
            for warning in caught:
                _progress(i, len(files), source.name, f"warning: {warning.message}")
            done += 1
            total_in += size_in
            total_out += size_out
            pixels += area
            compressed_bytes += compressed
            _progress(i, len(files), source.name,
                      f"{size_in} -> {size_out} bytes, {8 * compressed / area if area else 0:.4f} bpp, {time.perf_counter() - t0:.2f} s")
    except KeyboardInterrupt:
        sys.stderr.write(f"interrupted after {done} of {len(files)} files; no partial output was left\n")
        return EXIT_INTERRUPTED
    sys.stderr.write(
        f"{done} of {len(files)} files, {total_in} -> {total_out} bytes"
        + (f", {8 * compressed_bytes / pixels:.4f} bpp" if pixels else "") + f", {time.perf_counter() - started:.1f} s"
        + (f", {skipped} already done" if skipped else "") + (f", {failures} failed or skipped" if failures else "") + "\n"
    )
    return EXIT_FAILED if failures else EXIT_OK


def _check_common(args) -> None:
    CompressOptions.from_keywords({"tile": args.tile, "max_pixels": args.max_pixels}, request_options.FLAGS)
    if args.threads is not None and args.threads < 1:
        raise OptionError(f"--threads must be a positive integer, got {args.threads}")


def _cmd_compress(args) -> int:
    files = expand_inputs(args.inputs, IMAGE_SUFFIXES)
    if not files:
        raise OptionError("no input images found")
    _check_common(args)
    request = CompressOptions.from_args(args)  # every option checked once, before any work
    if args.bpp is not None and not (isinstance(args.bpp, float) and 0 < args.bpp <= 24):
        raise OptionError(f"--bpp must be a number of bits per pixel above 0 and at most 24, got {args.bpp}")
    if args.bpp is not None and (args.target_bytes is not None or args.quality is not None):
        raise OptionError("--bpp sets each image's size: give it without --target-bytes or --quality")
    if args.output and Path(args.output).suffix.lower() != SDZ_SUFFIX:
        raise OptionError(f"compress writes .sdz streams: name the output NAME{SDZ_SUFFIX}, not {Path(args.output).name!r} "
                          "(to get a picture in another format, decompress with -o NAME.png/.webp/...)")
    automatic = args.model == AUTO_MODEL
    if automatic and args.bpp is None and args.target_bytes is None:
        raise OptionError(f"--model {AUTO_MODEL} chooses the bundle by rate: give --bpp or --target-bytes")
    if automatic and not available_models():
        raise ModelNotFoundError(f"--model {AUTO_MODEL} chooses among the bundles in {models_dir()}/, and there are none; put bundles "
                                 "there (e.g. `python -c \"from sdlite import tae; tae.build_bundle(FOLDER, 'models/NAME')\"`) or name a model")
    targets = _targets(files, args, SDZ_SUFFIX)
    if args.ray is not None:
        if args.bpp is not None or automatic:
            raise OptionError(f"--bpp and --model {AUTO_MODEL} are not available with --ray; give --target-bytes and a model")
        return _compress_on_ray(files, targets, args, request)
    loaded: dict = {}

    def model_for(bpp: float | None):
        path = choose_model(bpp) if automatic else args.model
        key = str(path)
        if key not in loaded:
            loaded[key] = load_model(path, providers=args.providers, threads=args.threads)
        return loaded[key]

    if not automatic:
        model_for(None)  # a missing model is a usage error before any work

    def work(source: Path, target: Path):
        stats: dict = {}
        target_bytes = args.target_bytes
        if args.bpp is not None or automatic:
            width, height = _image_size(source, request.max_pixels)
            if args.bpp is not None:
                target_bytes = max(1, int(args.bpp * width * height / 8))
        model = model_for(args.bpp if args.bpp is not None else (8 * target_bytes / (width * height) if automatic else None))
        data = compress(source, model=model, options=request.replace(target_bytes=target_bytes), stats=stats)
        write_atomic(target, lambda f: f.write(data), force=args.force)
        return source.stat().st_size, len(data), stats["width"] * stats["height"], len(data)

    return _run_batch(files, targets, work, args)


def _image_size(source: Path, max_pixels) -> tuple[int, int]:
    """An image's (width, height) from its header, without decoding it (--bpp, --model auto)."""
    if not source.is_file():  # a FIFO would block Image.open: the image loader names the problem
        return load_rgb(source, max_pixels=max_pixels).shape[1::-1]
    try:
        with Image.open(source) as opened:
            return opened.size
    except Exception:  # let the image loader say what is wrong with the file
        return load_rgb(source, max_pixels=max_pixels).shape[1::-1]


def _compress_on_ray(files, targets, args, request: CompressOptions) -> int:
    """compress on Ray workers (sdlite.ray); this process writes the outputs as results arrive, in order."""
    try:
        from . import ray as on_ray
    except ImportError as exc:
        raise OptionError(f"--ray needs Ray Data: pip install 'sdlite[ray]' ({exc})") from None
    model_path = str(resolve_model_path(args.model).resolve())  # workers load the bundle by path
    submitted = [f for f, t in zip(files, targets) if args.force or not t.exists()]
    results = on_ray.compress_files(submitted, model=model_path, address=None if args.ray == "local" else args.ray, options=request,
                                    providers=args.providers, threads=args.threads)
    arrived: dict[str, tuple] = {}

    def work(source: Path, target: Path):
        while str(source) not in arrived:
            path, data, error = next(results)
            arrived[path] = (data, error)
        data, error = arrived.pop(str(source))
        if data is None:
            raise SdliteError(error)
        write_atomic(target, lambda f: f.write(data), force=args.force)
        meta = info(data)
        return source.stat().st_size, len(data), meta["width"] * meta["height"], len(data)

    return _run_batch(files, targets, work, args)


def _cmd_decompress(args) -> int:
    files = expand_inputs(args.inputs, {SDZ_SUFFIX})
    if not files:
        raise OptionError("no .sdz inputs found")
    _check_common(args)
    if not 0 <= args.seed <= MAX_SEED:
        raise OptionError(f"--seed must be an integer from 0 to {MAX_SEED}, got {args.seed}")
    if args.steps < 1:
        raise OptionError(f"--steps must be at least 1, got {args.steps}")
    targets = _targets(files, args, DECODED_SUFFIX)
    unknown = sorted({t.suffix or "(none)" for t in targets if t.suffix.lower() not in OUTPUT_FORMATS})
    if unknown:
        raise OptionError(f"cannot write images named {', '.join(unknown)}; name outputs with one of {', '.join(OUTPUT_FORMATS)}")
    preview = load_model(args.preview, providers=args.providers, threads=args.threads) if args.preview else None
    automatic = preview is None and args.model in (None, AUTO_MODEL)  # the decoder each stream names (sdlite.registry)
    model = None if preview is not None or automatic else args.model
    if model is not None and not codec_decoders.shipped().get(model):
        model = load_model(model, providers=args.providers, threads=args.threads)  # a missing model is a usage error before any work

    def work(source: Path, target: Path):
        data = read_file(source, max_pixels=args.max_pixels)  # a regular file, read no further than its header justifies
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", DecoderNote)
            image = decompress(data, model=model, preview=preview, decoder_mismatch=args.decoder_mismatch, denoise=args.denoise,
                               denoise_steps=args.steps, seed=args.seed, max_pixels=args.max_pixels, tile=args.tile,
                               providers=args.providers, threads=args.threads)
        for note in caught:
            if issubclass(note.category, DecoderNote):
                print(f"note: {source.name}: {note.message}", file=sys.stderr)
            else:
                warnings.warn_explicit(note.message, note.category, note.filename, note.lineno)
        buffer = io.BytesIO()
        image.save(buffer, format=OUTPUT_FORMATS[target.suffix.lower()])
        size = write_atomic(target, lambda f: f.write(buffer.getvalue()), force=args.force)
        return len(data), size, image.width * image.height, len(data)

    return _run_batch(files, targets, work, args)


def bundle_summary(path: Path) -> dict:
    """What `info` prints for a model bundle: id, latent space, components with their dtypes, quantization."""
    bundle = read_bundle(path)
    dtypes = {name: (entry or {}).get("dtype") for name, entry in ((bundle.manifest or {}).get("components") or {}).items()}
    return {"bundle": str(path), "model_id": bundle.model_id, "latent_space": bundle.latent_space_name,
            "components": {c: dtypes.get(c) or "fp32" for c in sorted(bundle.components)}, "quantization": bundle.quantization,
            "latent_channels": bundle.latent_channels, "downsample_factor": bundle.downsample_factor}


def tae_folder_summary(path: Path) -> dict:
    """What `info` prints for a diffusers AutoencoderTiny folder: its latent space and the model id its bundle will have."""
    config = tae.read_config(path)
    space = tae.resolve_space(path, config, None)
    tae.read_regular_size_check(path / tae.WEIGHTS_FILE)
    weights = tae.read_safetensors(path / tae.WEIGHTS_FILE)
    model_id = manifests.weights_model_id(weights.items(), space=space.name, scaling=space.scaling_factor, shift=space.shift_factor)
    return {"folder": str(path), "kind": "AutoencoderTiny", "model_id": model_id, "latent_space": space.name,
            "latent_channels": config["latent_channels"], "downsample_factor": space.factor, "tensors": len(weights)}


def _cmd_info(args) -> int:
    bundles = [Path(p) for p in args.inputs if Path(p).is_dir() and (is_bundle(Path(p)) or is_tae_folder(Path(p)))]
    files = expand_inputs([p for p in args.inputs if Path(p) not in bundles], {SDZ_SUFFIX})
    if not files and not bundles:
        raise OptionError("no .sdz inputs or model bundles found")
    status = EXIT_OK
    for bundle in bundles:
        try:
            print(json.dumps(tae_folder_summary(bundle) if is_tae_folder(bundle) and not is_bundle(bundle) else bundle_summary(bundle)))
        except (SdliteError, OSError) as exc:
            print(f"{bundle}: error: {exc}", file=sys.stderr)
            status = EXIT_FAILED
    for path in files:
        try:
            header, payload_bytes, total_bytes = read_header_file(path)  # streamed: bounded memory whatever the size
            print(json.dumps({"file": str(path), **describe(header, payload_bytes, total_bytes)}))
        except (SdliteError, OSError) as exc:
            print(f"{path}: error: {exc}", file=sys.stderr)
            status = EXIT_FAILED
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdlite", description="Image codec in Stable Diffusion's latent space.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details")
    parser.add_argument("--version", action="version", version=f"sdlite {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    def verbose(p):  # -v also after the subcommand (SUPPRESS: absent there, the top-level value stands)
        p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="log details")

    def common(p):
        p.add_argument("inputs", nargs="+", help="files or folders")
        verbose(p)
        p.add_argument("--model", help="bundle path or name under models/, a TAE release (taesd, taesd@1.2, taesdxl, taesd3, taef1: "
                                       "fetched once from a pinned commit and built without torch), or a local AutoencoderTiny "
                                       "folder. compress: default $SDLITE_MODEL, else the only bundle in models/, else taesd; "
                                       f"{AUTO_MODEL}: the bundle in models/ best at each image's rate. decompress: default the "
                                       "decoder the stream names, or one trained for the codec (taesd-codec), or its space's default")
        p.add_argument("--providers", nargs="+", help="onnxruntime providers, by name or alias: cpu, cuda, openvino (pip install "
                                                        "'sdlite[openvino]'; Intel CPUs; openvino:f32 for the CPU provider's pixels, "
                                                        "default precision auto: bf16 on AMX), e.g. --providers openvino "
                                                        "(default: CUDA if available, else CPU)")
        p.add_argument("--threads", type=int, help="intra-op threads for onnxruntime")
        out = p.add_mutually_exclusive_group()
        out.add_argument("-o", "--output", help="output file (one input only)")
        out.add_argument("--out-dir", help="folder for outputs (default: beside each input)")
        existing = p.add_mutually_exclusive_group()
        existing.add_argument("--force", action="store_true", help="replace existing outputs (without it they are kept and count as done)")
        existing.add_argument("--skip-existing", action="store_true",
                              help="leave existing outputs as they are and count them done (the default; kept for scripts that name it)")

    c = sub.add_parser("compress", help="images -> .sdz")
    common(c)
    request_options.add_arguments(c)
    c.add_argument("--bpp", type=float, help="size budget per image in bits per pixel (method entropy)")
    c.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="compress on Ray workers: a local cluster, or the one at ADDRESS (needs pip install 'sdlite[ray]')")
    d = sub.add_parser("decompress", help=".sdz -> PNG (or the format -o names: .jpg, .webp, ...)")
    common(d)
    request_options.add_arguments(d, compress=False)
    d.add_argument("--preview", metavar="MODEL", help="decode with this small decoder of the stream's latent space, no U-Net (e.g. a TAESD bundle)")
    d.add_argument("--decoder-mismatch", choices=DECODER_MISMATCH,
                   help="error: only the stream's own decoder (found by its model id, or --model); allow: another decoder of the "
                        "stream's latent space may decode it. Default: allow without --model (a note says when another decoder "
                        "stood in), error with --model")
    d.add_argument("--denoise", action=argparse.BooleanOptionalAction, default=None, help="run the U-Net denoising steps (default: when the bundle has a U-Net)")
    d.add_argument("--steps", type=int, default=DEFAULT_STEPS, help=f"U-Net steps when denoising (default {DEFAULT_STEPS})")
    d.add_argument("--seed", type=int, default=0, help="noise seed for denoising (default 0)")
    i = sub.add_parser("info", help="print .sdz headers (no model needed) and model bundles (id, latent space, dtypes, quantization) as JSON lines")
    i.add_argument("inputs", nargs="+")
    verbose(i)
    return parser


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on --help (0) and on bad usage (2)
        return int(exc.code or 0)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(message)s")
    logging.getLogger("sdlite").setLevel(logging.INFO if args.verbose else logging.WARNING)  # also where logging was set up before
    logging.getLogger("sdlite.progress").setLevel(logging.INFO)  # first-use work and long single images, shown without -v
    commands = {"compress": _cmd_compress, "decompress": _cmd_decompress, "info": _cmd_info}
    try:
        if getattr(args, "providers", None):
            sessions.check_providers(args.providers)  # a missing plugin is one line before any work
        return commands[args.command](args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (OptionError, ModelNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except SdliteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED


__all__ = ["main"]
