"""The conformance corpus (tests/conformance, docs/format.md section 9): every stream decodes to the raw latents
recorded when it was added, and its header says what was recorded. Streams are added by
tests/conformance/make_corpus.py and never removed or regenerated."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from sdlite import BitstreamError, decompress_latents

from .conformance.make_corpus import describe

CORPUS = Path(__file__).resolve().parent / "conformance"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())["streams"]


def _digest(data) -> str:
    if isinstance(data, np.ndarray):
        data = np.ascontiguousarray(data, dtype="<f4").tobytes()
    return hashlib.sha256(data).hexdigest()


def test_the_corpus_is_whole():
    files = {p.name for p in (CORPUS / "streams").iterdir()}
    assert len(MANIFEST) >= 40
    assert files == {Path(entry["file"]).name for entry in MANIFEST.values()}  # none missing, none unlisted
    versions = {entry["header"]["format_version"] for entry in MANIFEST.values()}
    spaces = {entry["header"]["latent_space"] for entry in MANIFEST.values()}
    methods = {entry["header"]["method"] for entry in MANIFEST.values()}
    assert versions == {1, 2, 3, 4, 5} and {"sd1", "sdxl", "sd3", "flux", "unknown"} <= spaces and methods == {"palette", "entropy"}


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_a_corpus_stream_decodes_to_its_recorded_latents(name):
    entry = MANIFEST[name]
    data = (CORPUS / entry["file"]).read_bytes()
    assert _digest(data) == entry["stream_sha256"]
    assert describe(data) == entry["header"]
    latents = decompress_latents(data, max_pixels=None)
    assert latents.dtype == np.float32 and list(latents.shape[1:]) == entry["header"]["latent_shape"]
    assert _digest(latents) == entry["latents_sha256"]


def test_a_changed_byte_is_caught():
    entry = MANIFEST["v4-entropy-sd1-q50"]
    data = bytearray((CORPUS / entry["file"]).read_bytes())
    data[len(data) // 2] ^= 0x10
    with pytest.raises(BitstreamError, match="CRC"):
        decompress_latents(bytes(data))
