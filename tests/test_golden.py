"""Golden streams: committed .sdz files must keep decoding to the same latents, bit for bit.

Decoding depends only on integers from the stream, so these hashes hold on every machine. A change
that alters them breaks existing files: bump bitstream.FORMAT_VERSION, then regenerate with
SDLITE_REGEN_GOLDEN=1 python -m pytest tests/test_golden.py
"""

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from sdlite import bitstream, decompress_latents, info, methods
from sdlite.codec import compress_latents

GOLDEN = Path(__file__).resolve().parent / "golden"
EXPECTED = GOLDEN / "expected.json"
MODEL_ID = "5d1e0000901d0000"
CASES = {  # name -> compress_latents options
    "palette": {"method": "palette"},
    "entropy-q50": {"method": "entropy", "quality": 50},
    "entropy-q90-levels2": {"method": "entropy", "quality": 90},
}
REGENERATE = os.environ.get("SDLITE_REGEN_GOLDEN") == "1"


def _latents(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(0, 3, (4, 10, 13)).cumsum(axis=2) / 2).astype(np.float32)


def _digest(latents: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(latents, dtype="<f4").tobytes()).hexdigest()


def _regenerate() -> None:
    from sdlite.methods import entropy

    expected = {}
    for seed, (name, options) in enumerate(CASES.items()):
        if name.endswith("levels2"):  # exercise the two-level transform too
            latents = _latents(seed)
            encoded = entropy.encode(latents, quality=options["quality"], levels=2)
            header = bitstream.Header(methods.ENTROPY, MODEL_ID, 13 * 8, 10 * 8, latents.shape, 8, encoded.params)
            data = bitstream.pack(header, encoded.payload)
        else:
            data = compress_latents(_latents(seed), model_id=MODEL_ID, **options)
        (GOLDEN / f"{name}.sdz").write_bytes(data)
        expected[name] = {"method": options["method"], "latents_sha256": _digest(decompress_latents(data))}
    EXPECTED.write_text(json.dumps(expected, indent=2) + "\n")


@pytest.mark.parametrize("name", list(CASES))
def test_golden_stream_decodes_bit_exactly(name):
    if REGENERATE and name == next(iter(CASES)):
        _regenerate()
    expected = json.loads(EXPECTED.read_text())[name]
    data = (GOLDEN / f"{name}.sdz").read_bytes()
    assert info(data)["method"] == expected["method"]
    assert _digest(decompress_latents(data)) == expected["latents_sha256"]
