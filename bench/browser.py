"""What the browser decoder (web/) is checked against: the Python decoder's pictures of conformance streams.

python -m bench browser-refs [--out bench-out/browser] [--shared ../shared] [--images ../shared/data/kodak]

The decoders are built by sdlite.tae (numpy + onnx, ONNX IR 8, which onnxruntime-web reads; the torch exports in
../shared/models carry IR 14, which onnxruntime-web 1.31 refuses) from ../shared/models/NAME-diffusers into
OUT/models/NAME, and both decoders use these files. For each conformance stream of a space with a decoder at
hand (sd1: TAESD; sdxl: TAESDXL; sd3: TAESD3; flux: TAEF1; flux2: TAEF2, built from
../shared/models/taef2-pth), sdlite decodes the stream with that decoder (no
U-Net, sdlite's default tiling) and writes the PNG; for the timing rows it compresses kodim01 (768x512) with
TAESD and TAESD3 at 0.15 bpp and times sdlite's decode (best of three, this process's threads). refs.json
lists, per stream, the URL paths a page fetches (/tests/... under the repository, /shared/... under
../shared, /refs/... beside refs.json) and the Python time;
web/test/browser.test.js reads it (SDLITE_BROWSER_REFS), decodes the same streams in headless Chromium and
compares.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import sdlite
from sdlite import images as image_ops
from sdlite import tae

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "conformance"
DECODER_OF_SPACE = {"sd1": "taesd", "sdxl": "taesdxl", "sd3": "taesd3", "flux": "taef1", "flux2": "taef2"}  # unknown spaces: only their own model
TIMED = (("taesd", "kodim01"), ("taesd3", "kodim01"))
TIMED_BPP = 0.15


def _decode(data: bytes, bundle: Path) -> tuple[object, float]:
    model = sdlite.load_model(bundle)
    best = None
    for _ in range(3):
        start = time.perf_counter()
        image = sdlite.decompress(data, model=model, decoder_mismatch="allow", denoise=False)
        best = min(best or 1e9, time.perf_counter() - start)
    return image, best


def make_refs(out: Path, shared: Path, images: Path, *, timed: bool = True) -> dict:
    """Write OUT/refs.json and the PNGs (and the timed streams); return the refs."""
    out.mkdir(parents=True, exist_ok=True)
    models = out / "models"
    for name in sorted(set(DECODER_OF_SPACE.values())):
        source, published = shared / "models" / f"{name}-diffusers", shared / "models" / f"{name}-pth"
        if (models / name / "manifest.json").is_file():
            continue
        if source.is_dir():
            tae.build_bundle(source, models / name)
        elif published.is_dir():  # TAEF2: the published .pth files (diffusers has no class for it)
            tae.build_from_pth(published, models / name)
    manifest = json.loads((CORPUS / "manifest.json").read_text())["streams"]
    rows = []
    for name, entry in manifest.items():
        header = entry["header"]
        decoder = DECODER_OF_SPACE.get(header["latent_space"])
        if decoder is None or not (models / decoder / "vae_decoder" / "model.onnx").is_file():
            continue
        data = (CORPUS / entry["file"]).read_bytes()
        image, seconds = _decode(data, models / decoder)
        image.save(out / f"{name}.png")
        rows.append({"name": name, "stream": f"/tests/conformance/{entry['file']}", "png": f"/refs/{name}.png", "space": header["latent_space"],
                     "decoder": f"/refs/models/{decoder}/vae_decoder/model.onnx", "decoder_space": _space(models / decoder),
                     "latents_sha256": entry["latents_sha256"], "python_seconds": round(seconds, 4), "timed": False})
    if timed:
        for decoder, stem in TIMED:
            source = images / f"{stem}.png"
            if not (models / decoder).is_dir() or not source.is_file():
                continue
            model = sdlite.load_model(models / decoder)
            width, height = image_ops.load_rgb(source).shape[1::-1]
            data = sdlite.compress(source, model=model, target_bytes=round(TIMED_BPP * width * height / 8))
            name = f"{stem}-{decoder}"
            (out / f"{name}.sdz").write_bytes(data)
            image, seconds = _decode(data, models / decoder)
            image.save(out / f"{name}.png")
            rows.append({"name": name, "stream": f"/refs/{name}.sdz", "png": f"/refs/{name}.png", "space": model.latent_space_name,
                         "decoder": f"/refs/models/{decoder}/vae_decoder/model.onnx", "decoder_space": _space(models / decoder),
                         "latents_sha256": None, "python_seconds": round(seconds, 4), "timed": True, "bytes": len(data),
                         "original": f"/shared/data/kodak/{stem}.png"})
    refs = {"streams": rows, "python": {"onnxruntime": __import__("onnxruntime").__version__, "sdlite": sdlite.__version__}}
    (out / "refs.json").write_text(json.dumps(refs, indent=1))
    return refs


def _space(bundle: Path) -> str:
    return sdlite.load_model(bundle).latent_space_name
