"""Adds streams to the conformance corpus (tests/conformance/streams + manifest.json); never changes one.

    python -m tests.conformance.make_corpus            # adds the cases below that are not in the corpus yet

A stream, once in the corpus, is never removed or regenerated: every later sdlite must decode it to the
same raw latents (docs/format.md, section 9). New cases get new names. The latents are synthetic (smooth
random fields in each space's usual range), so the corpus holds nothing but what this script makes and
the streams earlier releases wrote (tests/golden).
"""

from __future__ import annotations

import hashlib
import json
import struct
import zlib
from pathlib import Path

import numpy as np

from sdlite import bitstream, decompress_latents, info
from sdlite import latent_space as spaces
from sdlite.codec import compress_latents
from sdlite.methods import entropy, palette

HERE = Path(__file__).resolve().parent
STREAMS = HERE / "streams"
MANIFEST = HERE / "manifest.json"
GOLDEN = HERE.parent / "golden"
MODEL_ID = "c0f0ca5e00000001"


def smooth_latents(seed: int, channels: int, height: int, width: int, *, space: str | None = "sd1", flat_channels=()) -> np.ndarray:
    """A smooth random field in raw latent units of the space (about the spread real encoders give)."""
    rng = np.random.default_rng(seed)
    field = rng.normal(0, 1, (channels, height + 4, width + 4))
    for axis in (1, 2):
        field = (field + np.roll(field, 1, axis) + np.roll(field, 2, axis)) / 3
    field = field[:, 2:height + 2, 2:width + 2] * 3 + rng.normal(0, 0.3, (channels, height, width))
    unit = spaces.by_name(space).coding_unit if space else 1.0
    latents = field * 4 / unit
    for c in flat_channels:
        latents[c] = 0.0
    return latents.astype(np.float32)


def _entropy_stream(latents, *, space, width=None, height=None, scale=bitstream.SCALE_UNIT, space_id=None, **options) -> bytes:
    """An entropy stream with options compress_latents does not expose (levels, gains, scale)."""
    if "target_bytes" in options:
        options["overhead"] = bitstream.CONTAINER_OVERHEAD
    encoded = entropy.encode(latents, latent_space=space, **options)
    channels, h, w = latents.shape
    header = bitstream.Header(entropy.METHOD.id, MODEL_ID, width or w * 8, height or h * 8, latents.shape, 8, encoded.params,
                              latent_space=space_id if space_id is not None else (spaces.by_name(space).id if space else 0), scale=scale)
    bitstream.validate_geometry(header, max_pixels=None)
    return bitstream.pack(header, encoded.payload)


def _version_1_palette(seed: int) -> bytes:
    """Format version 1's container (no latent-space and scale bytes) around a palette stream."""
    latents = smooth_latents(seed, 4, 6, 9)
    encoded = palette.encode(latents)
    head = struct.pack(">4sBBB8sIIBHHH", bitstream.MAGIC, 1, palette.METHOD.id, 8, bytes.fromhex(MODEL_ID), 72, 48, 4, 6, 9,
                       len(encoded.params))
    body = head + encoded.params + struct.pack(">I", len(encoded.payload)) + encoded.payload
    return body + struct.pack(">I", zlib.crc32(body))


def _cases() -> dict:
    cases = {}
    for version in ("v2", "v3", "v4", "v5"):  # the streams releases wrote (tests/golden)
        for name in json.loads((GOLDEN / version / "expected.json").read_text()):
            cases[f"golden-{version}-{name}"] = ("a stream written by an earlier release (tests/golden)", lambda v=version, n=name: (GOLDEN / v / f"{n}.sdz").read_bytes())
    cases["v1-palette"] = ("format version 1 container, palette method", lambda: _version_1_palette(1))
    seed = 100
    for space, channels in (("sd1", 4), ("sdxl", 4), ("sd3", 16), ("flux", 16)):
        for quality in (5, 50, 95):
            seed += 1
            cases[f"v4-entropy-{space}-q{quality}"] = (
                f"entropy, latent space {space}, quality {quality}",
                lambda s=seed, sp=space, c=channels, q=quality: compress_latents(smooth_latents(s, c, 12, 17, space=sp), model_id=MODEL_ID,
                                                                                latent_space=sp, quality=q))
    cases["v4-entropy-unknown-space-q50"] = ("entropy, unknown latent space (identity transform)",
                                             lambda: compress_latents(smooth_latents(120, 4, 12, 17), model_id=MODEL_ID, quality=50))
    cases["v4-entropy-unknown-7ch"] = ("entropy, 7 channels of an unknown space",
                                       lambda: compress_latents(smooth_latents(121, 7, 9, 11), model_id=MODEL_ID, quality=40))
    for space, channels in (("sd1", 4), ("sd3", 16)):
        for levels in (0, 2):
            cases[f"v4-entropy-{space}-levels{levels}"] = (
                f"entropy, {levels} Haar levels, latent space {space}",
                lambda sp=space, c=channels, lv=levels: _entropy_stream(smooth_latents(130 + lv, c, 13, 19, space=sp), space=sp, quality=60, levels=lv))
    for space, channels in (("sd1", 4), ("flux", 16)):
        cases[f"v4-entropy-{space}-reconstruction-gains"] = (
            f"entropy with reconstruction gains, latent space {space}",
            lambda sp=space, c=channels: _entropy_stream(smooth_latents(140, c, 12, 16, space=sp), space=sp, quality=30, reconstruction_gains=True))
    for scale in (12, 16, 20):
        width, height = 300, 200
        coded_w, coded_h = bitstream.coded_size(width, height, scale)
        cases[f"v4-entropy-sd1-scale{scale}"] = (
            f"entropy, coded at scale {scale}/8 of a {width}x{height} image",
            lambda s=scale, w=width, h=height, cw=coded_w, ch=coded_h: _entropy_stream(
                smooth_latents(150 + s, 4, -(-ch // 8), -(-cw // 8)), space="sd1", width=w, height=h, scale=s, quality=40))
    for name, (channels, h, w) in {"1x1": (4, 1, 1), "1x97": (4, 1, 97), "3x5": (4, 3, 5), "130x70-blocks": (4, 130, 70),
                                   "sd3-67x3": (16, 67, 3)}.items():
        space = "sd3" if channels == 16 else "sd1"
        cases[f"v4-entropy-shape-{name}"] = (f"entropy, latent shape {channels}x{h}x{w}",
                                            lambda c=channels, hh=h, ww=w, sp=space: compress_latents(
                                                smooth_latents(160 + hh + ww, c, hh, ww, space=sp), model_id=MODEL_ID, latent_space=sp, quality=45))
    cases["v4-entropy-empty-planes"] = ("entropy with empty planes (constant channels)",
                                        lambda: compress_latents(smooth_latents(170, 4, 12, 16, flat_channels=(1, 3)), model_id=MODEL_ID,
                                                                 latent_space="sd1", quality=20))
    cases["v4-entropy-sd1-target-300"] = ("entropy, a 300-byte target", lambda: compress_latents(
        smooth_latents(180, 4, 24, 32), model_id=MODEL_ID, latent_space="sd1", target_bytes=300))
    cases["v4-entropy-sd3-target-900"] = ("entropy, a 900-byte target, sd3", lambda: compress_latents(
        smooth_latents(181, 16, 24, 32, space="sd3"), model_id=MODEL_ID, latent_space="sd3", target_bytes=900))
    cases["v4-entropy-sd1-large-q30"] = ("entropy, a 1600x1200-pixel latent (several blocks a side)", lambda: compress_latents(
        smooth_latents(190, 4, 150, 200), model_id=MODEL_ID, latent_space="sd1", quality=30))
    for name, (channels, space) in {"sd1": (4, "sd1"), "sd3": (16, "sd3"), "odd-5x7": (4, "sd1")}.items():
        shape = (5, 7) if name.startswith("odd") else (10, 14)
        cases[f"v4-palette-{name}"] = (f"palette method, {channels} channels, latent {shape[0]}x{shape[1]}",
                                       lambda c=channels, sp=space, sh=shape: compress_latents(
                                           smooth_latents(200 + c + sh[0], c, *sh, space=sp), model_id=MODEL_ID, latent_space=sp, method="palette"))
    # FLUX.2 (issue 25): 32 channels, transform 4 (its basis) in version 4, transform 5 (each component weighted)
    # from version 5; quality levels, a target, Haar levels, a 130x70 multi-block latent
    for version, seed, what in (("v4", 300, "flux2"), ("v5", 400, "flux2 transform 5")):
        cases.update(_flux2_cases(version, seed, what))
    cases["v4-palette-flux2"] = ("palette method, 32 channels, latent 10x14", lambda: compress_latents(
        smooth_latents(313, 32, 10, 14, space="flux2"), model_id=MODEL_ID, latent_space="flux2", method="palette"))
    cases["v5-entropy-flux2-empty-planes"] = ("entropy, flux2 transform 5 with empty planes (zero latents in a corner)", lambda: compress_latents(
        _with_zero_rows(smooth_latents(413, 32, 16, 20, space="flux2"), 8), model_id=MODEL_ID, latent_space="flux2", quality=15))
    # version 5 headers around the other spaces' unchanged transforms
    for space, channels in (("sd1", 4), ("sd3", 16)):
        cases[f"v5-entropy-{space}-q50"] = (f"entropy, latent space {space}, quality 50, a version 5 header", lambda sp=space, c=channels:
                                            compress_latents(smooth_latents(420 + c, c, 12, 17, space=sp), model_id=MODEL_ID, latent_space=sp, quality=50))
    return cases


def _flux2_cases(version: str, seed: int, what: str) -> dict:
    """The flux2 entropy cases of one format version (the encoder writes the current one): seeds from `seed`."""
    cases = {}
    for quality in (5, 50, 95):
        cases[f"{version}-entropy-flux2-q{quality}"] = (
            f"entropy, latent space {what} (32 channels), quality {quality}",
            lambda q=quality: compress_latents(smooth_latents(seed + q, 32, 12, 17, space="flux2"), model_id=MODEL_ID, latent_space="flux2", quality=q))
    cases[f"{version}-entropy-flux2-target-2000"] = (f"entropy, a 2000-byte target, {what}", lambda: compress_latents(
        smooth_latents(seed + 10, 32, 24, 32, space="flux2"), model_id=MODEL_ID, latent_space="flux2", target_bytes=2000))
    cases[f"{version}-entropy-flux2-levels2-gains"] = (f"entropy, 2 Haar levels and reconstruction gains, {what}", lambda: _entropy_stream(
        smooth_latents(seed + 11, 32, 13, 19, space="flux2"), space="flux2", quality=60, levels=2, reconstruction_gains=True))
    cases[f"{version}-entropy-flux2-130x70-blocks"] = (f"entropy, latent shape 32x130x70, {what}", lambda: compress_latents(
        smooth_latents(seed + 12, 32, 130, 70, space="flux2"), model_id=MODEL_ID, latent_space="flux2", quality=40))
    return cases


def _with_zero_rows(latents: np.ndarray, rows: int) -> np.ndarray:
    out = latents.copy()
    out[:, :rows] = 0.0
    return out


def _digest(data) -> str:
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data, dtype="<f4").tobytes()
    return hashlib.sha256(data).hexdigest()


def describe(data: bytes) -> dict:
    meta = info(data)
    return {k: meta[k] for k in ("format_version", "method", "model_id", "latent_space", "width", "height", "scale", "coded_width",
                                 "coded_height", "latent_shape", "downsample_factor")}


def main() -> int:
    STREAMS.mkdir(parents=True, exist_ok=True)
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.is_file() else {"streams": {}}
    added = 0
    for name, (description, make) in _cases().items():
        if name in manifest["streams"]:
            continue  # never regenerated
        data = make()
        path = STREAMS / f"{name}.sdz"
        if path.exists():
            raise SystemExit(f"{path} exists but is not in the manifest: refusing to overwrite a corpus stream")
        path.write_bytes(data)
        manifest["streams"][name] = {"file": f"streams/{name}.sdz", "description": description, "header": describe(data),
                                     "bytes": len(data), "stream_sha256": _digest(data),
                                     "latents_sha256": _digest(decompress_latents(data, max_pixels=None))}
        added += 1
    MANIFEST.write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{added} streams added; the corpus holds {len(manifest['streams'])}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
