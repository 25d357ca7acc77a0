"""docs/format.md says enough to write a decoder: tests/spec_decoder.py, written from the document alone, decodes
the conformance corpus to the same raw latents as sdlite, and its range decoder reads what constriction wrote."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from sdlite import latent_space

from . import spec_decoder

CORPUS = Path(__file__).resolve().parent / "conformance"
MANIFEST = json.loads((CORPUS / "manifest.json").read_text())["streams"]
BASES = {2: latent_space._SD3_BASIS, 3: latent_space._FLUX_BASIS, 4: latent_space._FLUX2_BASIS, 5: latent_space._FLUX2_BASIS}  # docs/format.md 5.1
WEIGHTS = {5: latent_space._FLUX2_WEIGHTS}  # the tables, by reference
SMALL = 200_000  # latent values: the spec decoder is plain Python, one symbol at a time


def _small(name):
    return spec_decoder.latent_values((CORPUS / MANIFEST[name]["file"]).read_bytes()) <= SMALL


@pytest.mark.parametrize("name", sorted(n for n in MANIFEST if _small(n)))
def test_the_spec_decoder_agrees_with_sdlite_on_the_corpus(name):
    data = (CORPUS / MANIFEST[name]["file"]).read_bytes()
    latents = spec_decoder.decode(data, BASES, WEIGHTS)
    assert hashlib.sha256(np.ascontiguousarray(latents, dtype="<f4").tobytes()).hexdigest() == MANIFEST[name]["latents_sha256"]


def test_enough_of_the_corpus_is_checked():
    assert sum(_small(n) for n in MANIFEST) >= 40


def test_the_range_decoder_reads_constriction():
    constriction = pytest.importorskip("constriction")
    rng = np.random.default_rng(5)
    for alphabet in (2, 3, 17, 300):
        count = 500
        tables = rng.random((count, alphabet)) ** 4 + 1e-9
        tables /= tables.sum(axis=1, keepdims=True)
        symbols = np.array([rng.choice(alphabet, p=t) for t in tables], dtype=np.int32)
        encoder = constriction.stream.queue.RangeEncoder()
        encoder.encode(symbols, constriction.stream.model.Categorical(perfect=False), tables)
        payload = encoder.get_compressed().astype("<u4").tobytes()
        reader = spec_decoder.RangeDecoder(payload)
        assert [reader.decode(list(t)) for t in tables] == symbols.tolist()
        assert reader.exhausted()
