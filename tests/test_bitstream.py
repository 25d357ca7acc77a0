import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sdlite import BitstreamError, decompress_latents, info
from sdlite import bitstream as bs
from sdlite.codec import compress_latents

MODEL_ID = "00112233445566ff"


def _latents(h=5, w=7, seed=0):
    return np.random.default_rng(seed).normal(0, 5, (4, h, w)).astype(np.float32)


def _stream(h=5, w=7):
    return compress_latents(_latents(h, w), model_id=MODEL_ID, size=(w * 8 - 3, h * 8 - 1), method="palette")


def _recrc(body: bytes) -> bytes:
    return body + struct.pack(">I", zlib.crc32(body))


def test_round_trip_header_and_latents():
    data = _stream()
    header, payload = bs.unpack(data)
    assert header.model_id == MODEL_ID and (header.width, header.height) == (53, 39)
    assert header.latent_shape == (4, 5, 7) and header.version == bs.FORMAT_VERSION
    z = decompress_latents(data)
    assert z.shape == (1, 4, 5, 7) and z.dtype == np.float32
    assert np.max(np.abs(z[0] - _latents())) < 1.5  # a 256-colour palette over 35 pixels is near-exact
    meta = info(data)
    assert meta["method"] == "palette" and meta["total_bytes"] == len(data)


def test_every_truncation_is_rejected():
    data = _stream()
    for cut in range(len(data)):
        with pytest.raises(BitstreamError):
            decompress_latents(data[:cut])


def test_every_single_bit_flip_is_rejected():
    data = _stream()
    for i in range(len(data)):
        corrupt = bytearray(data)
        corrupt[i] ^= 1 << (i % 8)
        with pytest.raises(BitstreamError):
            decompress_latents(bytes(corrupt))


def test_unknown_version_and_bad_magic():
    data = bytearray(_stream())
    data[4] = 99
    with pytest.raises(BitstreamError, match="unsupported format version 99"):
        bs.unpack(_recrc(bytes(data[:-4])))
    with pytest.raises(BitstreamError, match="magic"):
        bs.unpack(b"PNG\x00" + bytes(data[4:]))
    with pytest.raises(BitstreamError, match="bytes"):
        bs.unpack("not bytes")


def test_crafted_huge_dimensions_are_refused_before_allocation():
    header = bs.Header(1, MODEL_ID, 400_000, 400_000, (4, 50_000, 50_000))
    data = bs.pack(header, b"x")
    with pytest.raises(BitstreamError, match="max_pixels"):
        decompress_latents(data)


def test_inconsistent_latent_shape_is_refused():
    data = bs.pack(bs.Header(1, MODEL_ID, 64, 64, (4, 9, 8)), b"x")
    with pytest.raises(BitstreamError, match="latent shape"):
        bs.unpack(data)


def test_zlib_bomb_is_bounded():
    # a payload that inflates far beyond what the header allows must be cut off, not inflated
    bomb = zlib.compress(bytes([255]) + bytes(256 * 4) + bytes(50_000_000), 9)
    data = bs.pack(bs.Header(1, MODEL_ID, 16, 16, (4, 2, 2), params=struct.pack(">IHB", 182150, 255, 100)), bomb)
    with pytest.raises(BitstreamError, match="payload length 48612 exceeds"):  # refused before inflating
        decompress_latents(data)
    small_bomb = zlib.compress(bytes([255]) + bytes(256 * 4) + bytes(5_000), 9)  # within the length bound, inflates past it
    data = bs.pack(bs.Header(1, MODEL_ID, 16, 16, (4, 2, 2), params=struct.pack(">IHB", 182150, 255, 100)), small_bomb)
    with pytest.raises(BitstreamError, match="corrupt payload"):
        decompress_latents(data)


def test_unknown_method_id():
    data = bs.pack(bs.Header(77, MODEL_ID, 16, 16, (4, 2, 2)), b"")
    with pytest.raises(BitstreamError, match="unknown method"):
        decompress_latents(data)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_fuzzed_streams_raise_only_bitstream_error(data):
    """Mutate header fields and payload bytes (keeping a valid CRC so parsing goes deep)."""
    stream = bytearray(_stream(3, 4)[:-4])
    for _ in range(data.draw(st.integers(1, 6))):
        pos = data.draw(st.integers(0, len(stream) - 1))
        stream[pos] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, len(stream)))
        stream = stream[:cut]
    try:
        z = decompress_latents(_recrc(bytes(stream)))
    except BitstreamError:
        return
    assert z.ndim == 4 and np.isfinite(z).all()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_raise_bitstream_error(blob):
    with pytest.raises(BitstreamError):
        decompress_latents(blob)
    with pytest.raises(BitstreamError):
        decompress_latents(bs.MAGIC + bytes([bs.FORMAT_VERSION]) + blob)


def _with_version(data: bytes, version: int) -> bytes:
    """The same stream in the layout of format version 1 or 2 (no latent-space and scale bytes)."""
    header, payload = bs.unpack(data)
    channels, latent_h, latent_w = header.latent_shape
    params = header.params
    if header.method == 2:  # entropy parameters had no flags byte before version 3
        raw = zlib.decompress(params)
        assert raw[5] == 0, "streams with reconstruction gains have no version 2 form"
        params = zlib.compress(raw[:5] + raw[6:], 9)
    head = struct.pack(">4sBBB8sIIBHHH", bs.MAGIC, version, header.method, header.factor, bytes.fromhex(header.model_id),
                       header.width, header.height, channels, latent_h, latent_w, len(params))
    return _recrc(head + params + struct.pack(">I", len(payload)) + payload)


def test_version_1_palette_streams_still_decode_but_entropy_ones_name_the_problem():
    palette = _stream()
    assert np.array_equal(decompress_latents(_with_version(palette, 1)), decompress_latents(palette))
    entropy = compress_latents(_latents(), model_id=MODEL_ID, method="entropy")
    with pytest.raises(BitstreamError, match="format version 1.*pre-release"):
        decompress_latents(_with_version(entropy, 1))
    version_3 = (Path(__file__).parent / "golden" / "v3" / "entropy-q50.sdz").read_bytes()  # the same coding as version 2
    old = _with_version(version_3, 2)  # version 2 streams read as latent space unknown, full scale
    assert np.array_equal(decompress_latents(old), decompress_latents(version_3))
    assert info(old)["latent_space"] == "unknown" and info(old)["scale"] == 1.0
