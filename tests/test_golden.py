"""Golden streams: committed .sdz files must keep decoding to the same latents, bit for bit, and the
encoder must keep making the same bytes from the same latents.

Decoding depends only on integers from the stream, so the latent hashes hold on every machine. The
encoder's bytes also depend on its floating-point fits (least squares, fixed summation order); they are
pinned on this project's machines. A change that alters decoding breaks existing files: bump
bitstream.FORMAT_VERSION and write the new version's files with `python -m tests.regenerate_golden` (a
separate script: the tests never write what they compare with).
Older versions' files (golden/v2 and golden/v3, written by earlier releases) are never regenerated: they
prove old streams still decode. golden/v4 was made when format version 4 changed the entropy method's
coding (blocks, diagonal plane order, group residual ranges, empty planes, channel transforms), golden/v5 when
version 5 added flux2's weighted channel transform 5 (with a flux2 case).
An intended encoder change within a version (streams any decoder of that version reads) pins its new bytes
in vN/encoder.json with the reason, by hand and reviewed; the released streams stay as they are.
"""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from sdlite import bitstream, decompress_latents, info
from sdlite.codec import compress_latents
from sdlite.methods import entropy

GOLDEN = Path(__file__).resolve().parent / "golden"
CURRENT = GOLDEN / f"v{bitstream.FORMAT_VERSION}"
MODEL_ID = "5d1e0000901d0000"
CASES = {  # name -> how the stream is made
    "palette": {"method": "palette"},
    "entropy-q50": {"method": "entropy", "quality": 50},
    "entropy-q90-levels2": {"method": "entropy", "quality": 90, "levels": 2},
    "entropy-target-gains": {"method": "entropy", "target_bytes": 400, "reconstruction_gains": True},
    "entropy-sd3": {"method": "entropy", "quality": 60, "latent_space": "sd3"},  # 16 channels, the sd3 channel transform
    # format version 5: 32 channels, flux2's weighted transform 5 (a case older versions' folders do not have)
    "entropy-flux2": {"method": "entropy", "quality": 60, "latent_space": "flux2"},
}
CHANNELS = {"sd3": 16, "flux2": 32}


def _latents(seed: int, channels: int = 4) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 3, (channels, 10, 13)).cumsum(axis=2) / 2).astype(np.float32)


def _digest(data) -> str:
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data, dtype="<f4").tobytes()
    return hashlib.sha256(data).hexdigest()


def _encode(name: str, seed: int) -> bytes:
    options = dict(CASES[name])
    latents = _latents(seed, CHANNELS.get(options.get("latent_space"), 4))
    if "levels" in options or "reconstruction_gains" in options:  # options compress_latents does not expose
        options.pop("method")
        if "target_bytes" in options:
            options["overhead"] = bitstream.CONTAINER_OVERHEAD
        encoded = entropy.encode(latents, **options)
        header = bitstream.Header(entropy.METHOD.id, MODEL_ID, 13 * 8, 10 * 8, latents.shape, 8, encoded.params, latent_space=1)
        return bitstream.pack(header, encoded.payload)
    options.setdefault("latent_space", "sd1")
    return compress_latents(latents, model_id=MODEL_ID, **options)


def _golden_files():
    for folder in sorted(GOLDEN.iterdir()):
        if folder.is_dir():
            for name in json.loads((folder / "expected.json").read_text()):
                yield folder.name, name


@pytest.mark.parametrize("version,name", list(_golden_files()))
def test_golden_stream_decodes_bit_exactly(version, name):
    expected = json.loads((GOLDEN / version / "expected.json").read_text())[name]
    data = (GOLDEN / version / f"{name}.sdz").read_bytes()
    assert info(data)["method"] == expected["method"] and info(data)["format_version"] == int(version[1:])
    assert _digest(decompress_latents(data)) == expected["latents_sha256"]


ENCODER_PINS = "encoder.json"
"""Where the encoder changed on purpose within a format version (a better search, the same format), the new
bytes' hash and why, beside the released file, which is never rewritten and still decodes."""


def _encoder_pin(name: str) -> str:
    pins = CURRENT / ENCODER_PINS
    changed = json.loads(pins.read_text()) if pins.is_file() else {}
    if name in changed:
        return changed[name]["stream_sha256"]
    return json.loads((CURRENT / "expected.json").read_text())[name]["stream_sha256"]


@pytest.mark.parametrize("name", list(CASES))
def test_the_encoder_makes_the_golden_bytes(name):
    """Encoder-output golden: the same latents and options give the same stream, byte for byte (the
    released file's, or the later pin in encoder.json), and that stream decodes to what it coded."""
    data = _encode(name, list(CASES).index(name))
    assert _digest(data) == _encoder_pin(name)
    assert decompress_latents(data)[0].shape == _latents(0, CHANNELS.get(CASES[name].get("latent_space"), 4)).shape
