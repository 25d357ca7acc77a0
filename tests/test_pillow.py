"""The Pillow plugin, with real Pillow calls and real models (VAElight, TAESD)."""

import io
import warnings
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageOps, UnidentifiedImageError

import sdlite
import sdlite.pillow
from sdlite import BitstreamError, ModelNotFoundError, SdliteError

from .conftest import SHARED


@pytest.fixture
def pillow_model(vaelight):
    sdlite.pillow.set_model(vaelight)
    yield vaelight
    sdlite.pillow.set_model(None)


def test_registered_like_other_plugins():
    assert Image.registered_extensions()[".sdz"] == "SDZ"
    assert Image.MIME["SDZ"] == "image/x-sdz" and "SDZ" in Image.SAVE and "SDZ" in Image.OPEN
    sdlite.pillow.register()  # idempotent
    assert Image.registered_extensions()[".sdz"] == "SDZ"


def test_open_reads_the_header_only(pillow_model, kodak, tmp_path, monkeypatch):
    Image.open(kodak / "kodim03.png").save(tmp_path / "k.sdz", quality=45)
    sdlite.pillow.set_model(None)
    monkeypatch.setenv("SDLITE_MODELS_DIR", str(tmp_path / "no-models"))
    monkeypatch.delenv("SDLITE_MODEL", raising=False)
    with Image.open(tmp_path / "k.sdz") as im:  # no model anywhere: opening still works
        assert (im.format, im.size, im.mode) == ("SDZ", (768, 512), "RGB")
        assert im.info["method"] == "entropy" and im.info["latent_space"] == "sd1" and im.info["bytes"] == (tmp_path / "k.sdz").stat().st_size
        assert im.info["model_id"] == pillow_model.model_id and 0 < im.info["bpp"] < 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", sdlite.DecoderNote)  # the stream's own model is nowhere: a same-space decoder stands in
            im.load()  # with no model set, the decoder is found for the stream (sdlite.registry)
        assert im.size == (768, 512)


def test_save_and_load_match_the_library(pillow_model, kodak, tmp_path):
    original = Image.open(kodak / "kodim05.png")
    original.save(tmp_path / "a.sdz", target_bytes=5000)
    data = (tmp_path / "a.sdz").read_bytes()
    assert 0.95 * 5000 <= len(data) <= 5000
    with Image.open(tmp_path / "a.sdz") as im:
        pixels = np.asarray(im)
    assert np.array_equal(pixels, np.asarray(sdlite.decompress(data, model=pillow_model)))
    buffer = io.BytesIO()
    original.save(buffer, format="SDZ", method="palette")
    assert sdlite.info(buffer.getvalue())["method"] == "palette"
    reopened = Image.open(io.BytesIO(buffer.getvalue()))
    assert reopened.size == (768, 512)


def test_ordinary_pillow_code_works(pillow_model, kodak, tmp_path):
    Image.open(kodak / "kodim07.png").save(tmp_path / "b.sdz")
    with Image.open(tmp_path / "b.sdz") as im:
        im.thumbnail((128, 128))
        assert im.size == (128, 85) and im.mode == "RGB"
    with Image.open(tmp_path / "b.sdz") as im:
        assert im.convert("L").mode == "L"
        fitted = ImageOps.fit(im, (64, 64))
        assert fitted.size == (64, 64)
        assert ImageOps.grayscale(im).size == (768, 512)
        im.crop((10, 10, 50, 40)).save(tmp_path / "crop.png")
    assert Image.open(tmp_path / "crop.png").size == (40, 30)


def test_alpha_converts_as_compress_does(pillow_model, tmp_path):
    rgba = Image.new("RGBA", (40, 24), (255, 0, 0, 128))
    with pytest.warns(UserWarning, match="composited onto white"):
        rgba.save(tmp_path / "alpha.sdz")
    Image.new("P", (40, 24)).save(tmp_path / "p.sdz")
    assert Image.open(tmp_path / "p.sdz").size == (40, 24)


def test_corrupt_files_raise_pillows_errors_with_sdlites_message(pillow_model, photo, tmp_path):
    Image.fromarray(photo).save(tmp_path / "ok.sdz")
    data = bytearray((tmp_path / "ok.sdz").read_bytes())
    data[20] ^= 0xFF  # header byte (the height): the fields no longer fit, nor does the CRC
    with pytest.raises(UnidentifiedImageError, match="does not fit image|CRC-32") as raised:
        Image.open(io.BytesIO(bytes(data)))
    assert isinstance(raised.value, BitstreamError)
    good = (tmp_path / "ok.sdz").read_bytes()
    header, _ = sdlite.bitstream.unpack(good)
    start = sdlite.bitstream.CONTAINER_OVERHEAD - 8  # the parameters follow the fixed header
    body = bytearray(good[:-4])
    body[start : start + len(header.params)] = b"\x00" * len(header.params)  # not a deflate stream; CRC recomputed below
    forged = bytes(body) + struct.pack(">I", zlib.crc32(bytes(body)))
    with Image.open(io.BytesIO(forged)) as im:  # the header is sound: opening works
        assert im.size == (70, 45)
        with pytest.raises(OSError, match="cannot decode SDZ image: corrupt entropy method parameters") as raised:
            im.load()
    assert isinstance(raised.value, SdliteError)


def test_taesd_round_trip_through_pillow(kodak, tmp_path):
    taesd = SHARED / "models" / "taesd"
    if not (taesd / "vae_decoder" / "model.onnx").is_file():
        pytest.skip(f"real-weights model absent: {taesd}")
    sdlite.pillow.set_model(taesd)
    try:
        Image.open(kodak / "kodim04.png").save(tmp_path / "t.sdz", quality=60)
        with Image.open(tmp_path / "t.sdz") as im:
            assert im.size == (512, 768) and np.asarray(im).std() > 10
    finally:
        sdlite.pillow.set_model(None)


def test_save_errors_are_sdlite_errors_and_oserrors(tmp_path):
    from sdlite.pillow import SdzEncodeError

    image = Image.new("RGB", (64, 64))
    with pytest.raises(SdzEncodeError) as caught:
        image.save(tmp_path / "x.sdz", target_bytes=10)
    assert isinstance(caught.value, OSError) and isinstance(caught.value, SdliteError)
    with pytest.raises(SdliteError, match="model must be"):
        image.save(tmp_path / "y.sdz", model=12)


def test_a_model_of_the_wrong_type_is_an_option_error():
    with pytest.raises(sdlite.OptionError, match="model must be"):
        sdlite.compress(np.zeros((64, 64, 3), np.uint8), model=12)
