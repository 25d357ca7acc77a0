"""Decoding with no model named: the shipped decoders trained for the codec, the stream's own decoder found by
its model id, or its latent space's default with a note; strict mode refuses to stand in."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from PIL import Image

import sdlite
from sdlite import cli, codec_decoders, registry
from sdlite.errors import DecoderNote, ModelMismatchError, ModelNotFoundError

from .conftest import SHARED

TAESD_DIFFUSERS = SHARED / "models" / "taesd-diffusers"
needs_taesd = pytest.mark.skipif(not TAESD_DIFFUSERS.is_dir(), reason="../shared/models/taesd-diffusers (TAESD weights) is not here")
UNKNOWN_ID = "0123456789abcdef"


def _latents(seed=0, shape=(4, 8, 12)):
    return np.random.default_rng(seed).normal(0, 1, shape).astype(np.float32) * 4


def _stream(quality: int, model_id=UNKNOWN_ID, space="sd1", shape=(4, 8, 12)) -> bytes:
    return sdlite.compress_latents(_latents(shape=shape), model_id=model_id, latent_space=space, quality=quality)


@pytest.fixture
def empty_places(tmp_path, monkeypatch):
    """No bundle in the models folder and an empty cache: only the shipped decoders can be found."""
    monkeypatch.setenv("SDLITE_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("SDLITE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SDLITE_MODEL", raising=False)
    return tmp_path


def test_the_package_ships_the_sd1_decoder_set():
    taesd_codec = codec_decoders.shipped()["taesd-codec"]
    assert taesd_codec.latent_space == "sd1" and len(taesd_codec.bands) >= 1
    for band in taesd_codec.bands:
        model = sdlite.load_model(band.path)  # no network: the files are in the package
        assert model.latent_space.name == "sd1" and model.components == {"vae_decoder"}


def test_a_stream_whose_decoder_is_nowhere_decodes_with_its_spaces_default_and_a_note(empty_places):
    data = _stream(quality=95)  # a fine step: no trained band claims it
    step = sdlite.codec.stream_step(sdlite.bitstream.unpack(data)[0])
    assert codec_decoders.for_space("sd1").band_for(step) is None
    with pytest.warns(DecoderNote, match=f"model {UNKNOWN_ID} is not here: decoding with taesd-codec"):
        image = sdlite.decompress(data)
    assert image.size == (96, 64)


def test_strict_mode_refuses_to_stand_in(empty_places):
    with pytest.raises(ModelNotFoundError, match=f"no decoder with the stream's model id {UNKNOWN_ID}"):
        sdlite.decompress(_stream(quality=95), decoder_mismatch="error")


def test_a_coarse_stream_decodes_with_the_band_trained_for_its_step(empty_places):
    data = _stream(quality=1)
    step = sdlite.codec.stream_step(sdlite.bitstream.unpack(data)[0])
    band = codec_decoders.for_space("sd1").band_for(step)
    assert band is not None, f"step {step} is in no band"
    choice = registry.choose_decoder(UNKNOWN_ID, sdlite.latent_space.by_name("sd1").id, step, strict=False)
    assert (choice.model, choice.reason, choice.note) == (band.path, "trained", None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DecoderNote)  # the trained decoder is not a stand-in worth a note
        assert sdlite.decompress(data).size == (96, 64)


def test_the_set_by_name_picks_its_band_and_refuses_other_spaces(empty_places):
    data = _stream(quality=1)
    band = codec_decoders.for_space("sd1").band_for(sdlite.codec.stream_step(sdlite.bitstream.unpack(data)[0]))
    with pytest.warns(RuntimeWarning, match="another decoder"):
        expected = sdlite.decompress(data, model=band.path, decoder_mismatch="allow")
    assert np.array_equal(np.asarray(sdlite.decompress(data, model="taesd-codec")), np.asarray(expected))
    sd3 = sdlite.compress_latents(_latents(shape=(16, 8, 12)), model_id=UNKNOWN_ID, latent_space="sd3", quality=50)
    with pytest.raises(ModelMismatchError, match="taesd-codec decodes latent space sd1"):
        sdlite.decompress(sd3, model="taesd-codec")
    with pytest.raises(ModelNotFoundError, match="set of decoders"):
        sdlite.compress(np.zeros((64, 64, 3), np.uint8), model="taesd-codec")


def test_a_space_without_a_shipped_set_falls_back_to_its_release(empty_places):
    sdxl = sdlite.compress_latents(_latents(shape=(4, 8, 12)), model_id=UNKNOWN_ID, latent_space="sdxl", quality=50)
    with pytest.warns(DecoderNote, match="taesdxl"), pytest.raises(ModelNotFoundError, match="cannot fetch taesdxl@1.3"):
        sdlite.decompress(sdxl)  # conftest's hub: nothing listens, so the fetch fails with one line


def test_the_sd3_set_is_shipped_and_decodes_sd3_streams(empty_places):
    taesd3_codec = codec_decoders.shipped()["taesd3-codec"]
    assert taesd3_codec.latent_space == "sd3" and codec_decoders.for_space("sd3") is taesd3_codec
    sd3 = sdlite.compress_latents(_latents(shape=(16, 8, 12)), model_id=UNKNOWN_ID, latent_space="sd3", quality=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DecoderNote)
        assert sdlite.decompress(sd3).size == (96, 64)
    assert sdlite.decompress(sd3, model="taesd3-codec").size == (96, 64)


def test_an_unknown_space_cannot_be_stood_in_for(empty_places):
    data = sdlite.compress_latents(_latents(), model_id=UNKNOWN_ID, quality=50)
    with pytest.raises(ModelNotFoundError, match="latent space is unknown"):
        sdlite.decompress(data)


@needs_taesd
def test_the_streams_own_decoder_is_found_by_id(empty_places):
    """A stream made with a local AutoencoderTiny folder decodes with plain decompress: its bundle is in the cache."""
    photo = np.asarray(Image.open(SHARED / "data" / "kodak" / "kodim03.png").convert("RGB"))[:128, :192]
    data = sdlite.compress(photo, model=str(TAESD_DIFFUSERS), quality=98)
    own = sdlite.decompress(data, model=str(TAESD_DIFFUSERS))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DecoderNote)
        found = sdlite.decompress(data, decoder_mismatch="error")
    assert np.array_equal(np.asarray(found), np.asarray(own))


@needs_taesd
def test_cli_decompress_needs_no_model_and_never_takes_the_originals_name(empty_places, capsys):
    folder = empty_places
    photo = folder / "photo.png"
    Image.open(SHARED / "data" / "kodak" / "kodim03.png").crop((0, 0, 192, 128)).save(photo)
    original = photo.read_bytes()
    for _ in range(2):  # rerunnable as written
        assert cli.main(["compress", str(photo), "--model", str(TAESD_DIFFUSERS), "--force"]) == 0
        assert cli.main(["decompress", str(folder / "photo.sdz"), "--force"]) == 0
    assert photo.read_bytes() == original
    assert Image.open(folder / "photo.decoded.png").size == (192, 128)


def test_cli_notes_the_stand_in_and_strict_mode_exits_non_zero(empty_places, capsys):
    stream = empty_places / "x.sdz"
    stream.write_bytes(_stream(quality=95))
    assert cli.main(["decompress", str(stream)]) == 0
    assert f"note: x.sdz: model {UNKNOWN_ID} is not here" in capsys.readouterr().err
    assert cli.main(["decompress", str(stream), "--decoder-mismatch", "error", "-o", str(empty_places / "y.png")]) != 0


def test_cli_first_minutes(empty_places, capsys):
    photo = empty_places / "p.png"
    Image.new("RGB", (64, 64)).save(photo)
    assert cli.main(["compress", str(photo), "-o", str(empty_places / "x.webp")]) == 2
    assert "compress writes .sdz streams" in capsys.readouterr().err
    assert cli.main(["compress", str(photo), "--model", "tasd"]) == 2
    assert capsys.readouterr().err.strip() == "error: no model 'tasd': did you mean taesd?"
    assert cli.main(["compress", str(photo), "--target-bytes", "10"]) == 2
    assert "--target-bytes must be an integer >= 60" in capsys.readouterr().err
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("sdlite ")


@needs_taesd
def test_info_reads_an_autoencoder_tiny_folder(capsys):
    assert cli.main(["info", str(TAESD_DIFFUSERS)]) == 0
    line = capsys.readouterr().out
    assert '"kind": "AutoencoderTiny"' in line and '"latent_space": "sd1"' in line


def test_pillow_opens_a_stream_with_no_model_set(empty_places):
    import sdlite.pillow

    sdlite.pillow.set_model(None)
    path = empty_places / "x.sdz"
    path.write_bytes(_stream(quality=1))
    with Image.open(path) as image:
        image.load()
        assert image.size == (96, 64)


def _corpus_streams(space: str):
    import json

    from .test_conformance import CORPUS

    for name, entry in json.loads((CORPUS / "manifest.json").read_text())["streams"].items():
        if entry["header"]["latent_space"] == space:
            yield name, (CORPUS / entry["file"]).read_bytes(), entry


@pytest.mark.parametrize("space, decoder_set, least", [("sd1", "taesd-codec", 15), ("sd3", "taesd3-codec", 9)])
def test_the_trained_set_decodes_every_conformance_stream_of_its_space(empty_places, space, decoder_set, least):
    decoded = 0
    for name, data, entry in _corpus_streams(space):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DecoderNote)
            image = sdlite.decompress(data, max_pixels=None)  # no model: a trained band, or the nearest (their id is nowhere)
        assert image.size == (entry["header"]["width"], entry["header"]["height"]), name
        assert sdlite.decompress(data, model=decoder_set, max_pixels=None).size == image.size
        decoded += 1
    assert decoded >= least


@pytest.mark.parametrize("space", ["sd1", "sd3"])
def test_rate_awareness_picks_the_band_of_the_step(space):
    decoder_set = codec_decoders.for_space(space)
    bands = sorted(decoder_set.bands, key=lambda b: b.min_step)
    finest, coarsest = bands[0], bands[-1]
    assert decoder_set.band_for(finest.min_step / 2) is None  # finer than any band: the base decoder's domain
    assert decoder_set.band_for(finest.min_step) == finest
    assert decoder_set.band_for(coarsest.min_step * 10) == coarsest
    assert decoder_set.nearest(finest.min_step / 2) == finest and decoder_set.nearest(None) == finest
    for low, high in zip(bands, bands[1:]):
        assert low.max_step == high.min_step  # no step falls between two bands


@pytest.mark.parametrize("space", ["sd1", "sd3"])
def test_shipped_band_edges_are_the_trainers(space):
    """The listing decodes each band where its pairs were made (export.train_decoder.SPACE_BANDS), except that a
    band may start higher where it was measured not to win (package --use-from): one set of edges, not two."""
    from export.train_decoder import SPACE_BANDS

    listed = {band.name: band for band in codec_decoders.for_space(space).bands}
    assert set(listed) == set(SPACE_BANDS[space])
    for name, (low, high) in SPACE_BANDS[space].items():
        assert listed[name].max_step == high
        assert listed[name].min_step >= low


def test_a_vaelight_stream_keeps_its_own_decoder_when_it_is_here(vaelight, tmp_path, monkeypatch):
    """The trained decoders replace a TAE decoder, not another family's: VAElight's own decoder keeps 1.5-2 dB more
    PSNR on its streams (BENCHMARKS.md), so a coarse VAElight stream whose bundle is in models/ decodes with it."""
    monkeypatch.setenv("SDLITE_MODELS_DIR", str(tmp_path / "models"))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "vaelight").symlink_to(vaelight.path)
    y, x = np.mgrid[0:64, 0:96]
    photo = np.stack([x * 2, y * 3, x + y], -1).astype(np.uint8)
    data = sdlite.compress(photo, model=vaelight, quality=1)
    header = sdlite.bitstream.unpack(data)[0]
    choice = registry.choose_decoder(header.model_id, header.latent_space, sdlite.codec.stream_step(header), strict=False)
    assert choice.reason == "own"
    assert np.array_equal(np.asarray(sdlite.decompress(data)), np.asarray(sdlite.decompress(data, model=vaelight)))
