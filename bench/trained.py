"""Decoders trained for the codec against the base decoder, on the same streams.

python -m bench trained-decoders IMAGES... --model BASE_BUNDLE --set taesd-codec [--bpp 0.05 0.1 ...] [--out DIR]

Each image is compressed once per rate with the base bundle (the codec's default path: coded scales,
effort 1, target bytes = bpp * pixels / 8); the stream is decoded by the base decoder, by the trained set
(model=NAME: its band for the stream's step, or the nearest) and by the default rule (model=None, what
users get: the trained band where one was trained for the step, else the stream's own decoder). PSNR,
LPIPS-alex and LPIPS-vgg per row; crops (original | base | default) of the first images at the lowest
rates, to look at for invented texture.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

import sdlite
from sdlite import bitstream, codec_decoders, registry
from sdlite.codec import stream_step

from . import metrics
from .lpips import LPIPS, load_weights

DEFAULT_BPP = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5)
CROP = 256


@contextlib.contextmanager
def models_folder_with(bundle: Path):
    """A models folder holding only `bundle`, as $SDLITE_MODELS_DIR while inside: the default rule then finds
    the stream's own decoder as a user's would (they compressed with it), and nothing else."""
    previous = os.environ.get(registry.ENV_MODELS_DIR)
    with tempfile.TemporaryDirectory(prefix="sdlite-models-") as folder:
        (Path(folder) / bundle.name).symlink_to(bundle.resolve())
        os.environ[registry.ENV_MODELS_DIR] = folder
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop(registry.ENV_MODELS_DIR, None)
            else:
                os.environ[registry.ENV_MODELS_DIR] = previous


def run(files: list[Path], *, model: str, decoder_set: str, bpps=DEFAULT_BPP, out_dir: Path, crops: int = 2) -> str:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The default rule finds the stream's own decoder as a user's would (they compressed with it, so it is in
    # their models folder or cache): the base bundle is put in a models folder of its own.
    with models_folder_with(Path(model)):
        base = sdlite.load_model(model)
        trained = codec_decoders.shipped()[decoder_set]
        alex, vgg = LPIPS(load_weights(None, "alexnet"), "alexnet"), LPIPS(load_weights(None, "vgg16"), "vgg16")
        rows = []
        started = time.perf_counter()
        for index, path in enumerate(files):
            original = np.asarray(Image.open(path).convert("RGB"))
            for bpp in bpps:
                data = sdlite.compress(original, model=base, target_bytes=int(bpp * original.shape[0] * original.shape[1] / 8))
                header, _ = bitstream.unpack(data)
                step = stream_step(header)
                band = trained.band_for(step)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    pictures = {"base": sdlite.decompress(data, model=base), "trained": sdlite.decompress(data, model=decoder_set),
                                "default": sdlite.decompress(data)}
                row = {"image": path.name, "bpp": bpp, "bytes": len(data), "real_bpp": 8 * len(data) / original.shape[0] / original.shape[1],
                       "step": step, "band": band.name if band else None, "scale": header.scale / bitstream.SCALE_UNIT}
                for name, picture in pictures.items():
                    pixels = np.asarray(picture)
                    row[name] = {"psnr": metrics.psnr(original, pixels), "lpips": alex(original, pixels), "lpips_vgg": vgg(original, pixels)}
                rows.append(row)
                if index < crops and bpp in bpps[:2]:
                    top, left = (original.shape[0] - CROP) // 2, (original.shape[1] - CROP) // 2
                    strip = [original] + [np.asarray(pictures[n]) for n in ("base", "default")]
                    tile = np.concatenate([a[top:top + CROP, left:left + CROP] for a in strip], axis=1)
                    Image.fromarray(tile).save(out_dir / f"crop-{path.stem}-{bpp:g}bpp.png")
            print(f"{index + 1}/{len(files)} {path.name} {time.perf_counter() - started:.0f} s", flush=True)
    (out_dir / "trained.json").write_text(json.dumps(rows, indent=1))
    text = report(rows, model=model, decoder_set=decoder_set)
    (out_dir / "trained.md").write_text(text + "\n")
    return text


def report(rows: list[dict], *, model: str, decoder_set: str) -> str:
    lines = [f"base {model} against {decoder_set}, {len({r['image'] for r in rows})} images, means (LPIPS-alex / LPIPS-vgg / PSNR dB)", "",
             "| target bpp | real bpp | streams in a trained band | base | trained set | default (model=None) | default - base (alex, vgg, dB) |",
             "|---|---|---|---|---|---|---|"]
    for bpp in sorted({r["bpp"] for r in rows}):
        chosen = [r for r in rows if r["bpp"] == bpp]

        def mean(name, key):
            return float(np.mean([r[name][key] for r in chosen]))

        cells = {n: f"{mean(n, 'lpips'):.3f} / {mean(n, 'lpips_vgg'):.3f} / {mean(n, 'psnr'):.2f}" for n in ("base", "trained", "default")}
        delta = (f"{mean('default', 'lpips') - mean('base', 'lpips'):+.3f}, {mean('default', 'lpips_vgg') - mean('base', 'lpips_vgg'):+.3f}, "
                 f"{mean('default', 'psnr') - mean('base', 'psnr'):+.2f}")
        banded = sum(r["band"] is not None for r in chosen)
        lines.append(f"| {bpp:g} | {np.mean([r['real_bpp'] for r in chosen]):.3f} | {banded} of {len(chosen)} | {cells['base']} | "
                     f"{cells['trained']} | {cells['default']} | {delta} |")
    return "\n".join(lines)
