"""Latent spaces: bundles name theirs, streams record it, and any decoder of a space may read its streams
when the caller allows it (real models: VAElight and TAESD are both SD 1.x-space autoencoders)."""

import json
import warnings

import numpy as np
import pytest

import sdlite
from sdlite import ModelMismatchError, OptionError, compress, compress_latents, decompress, info, latent_space
from sdlite.bitstream import unpack

from .conftest import SHARED
from .fakes import fake_bundle, fake_sessions

TAESD = SHARED / "models" / "taesd"


def test_known_spaces_from_names_and_configs():
    sd1 = latent_space.by_name("sd1")
    assert (sd1.channels, sd1.factor, sd1.scaling_factor, sd1.id) == (4, 8, 0.18215, 1)
    assert latent_space.from_config(4, 8, 0.18215, None) is sd1
    assert latent_space.from_config(4, 8, 0.13025, None).name == "sdxl"
    assert latent_space.from_config(16, 8, 1.5305, 0.0609).name == "sd3"
    assert latent_space.from_config(4, 8, 0.5, None) is None  # a space sdlite does not know
    assert latent_space.by_id(0) is None and latent_space.by_id(200) is None
    with pytest.raises(OptionError, match="sd1, sdxl, sd3, flux"):
        latent_space.by_name("sd9")


def test_optimum_folders_get_their_space_from_config_json(vaelight, taesd):
    assert vaelight.latent_space.name == "sd1" and taesd.latent_space.name == "sd1"
    assert vaelight.model_id != taesd.model_id


def test_streams_record_the_space_and_compress_latents_can_name_it():
    z = np.random.default_rng(0).normal(0, 3, (4, 6, 8)).astype(np.float32)
    assert info(compress_latents(z, model_id="0123456789abcdef"))["latent_space"] == "unknown"
    named = compress_latents(z, model_id="0123456789abcdef", latent_space="sd1")
    assert info(named)["latent_space"] == "sd1" and unpack(named)[0].latent_space == 1
    with pytest.raises(OptionError, match="not of latent space sdxl"):
        compress_latents(np.zeros((3, 6, 8), np.float32), model_id="0123456789abcdef", latent_space="sdxl")


def test_cross_decoding_needs_the_callers_consent_and_warns_once(vaelight, taesd, kodak):
    image = kodak / "kodim05.png"
    for encoder, decoder in ((vaelight, taesd), (taesd, vaelight)):
        data = compress(image, model=encoder, quality=60)
        with pytest.raises(ModelMismatchError, match="decoder_mismatch='allow'") as refused:
            decompress(data, model=decoder)
        assert "--decoder-mismatch allow" in str(refused.value) and "sd1" in str(refused.value)
        sdlite.codec._warned_pairs.clear()
        with pytest.warns(RuntimeWarning, match="another decoder of latent space sd1"):
            picture = decompress(data, model=decoder, decoder_mismatch="allow")
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # the second decode of the same pair is quiet
            again = decompress(data, model=decoder, decoder_mismatch="allow")
        assert picture.size == (768, 512) and np.array_equal(np.asarray(picture), np.asarray(again))
        own = np.asarray(decompress(data, model=encoder), dtype=np.float64)
        other = np.asarray(picture, dtype=np.float64)
        assert 10 * np.log10(255**2 / np.mean((own - other) ** 2)) > 15  # the same picture, drawn by another decoder


def test_preview_decodes_with_a_small_decoder_of_the_space(vaelight, taesd, kodak, tmp_path, capsys):
    data = compress(kodak / "kodim07.png", model=taesd, quality=70)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a preview is asked for: no warning
        preview = decompress(data, preview=vaelight)
    assert preview.size == (768, 512)
    from sdlite.cli import main

    stream = tmp_path / "p.sdz"
    stream.write_bytes(data)
    assert main(["decompress", str(stream), "-o", str(tmp_path / "p.png"), "--preview", str(vaelight.path)]) == 0
    assert main(["decompress", str(stream), "-o", str(tmp_path / "q.png"), "--model", str(vaelight.path)]) == 1
    assert "--decoder-mismatch allow" in capsys.readouterr().err
    assert main(["decompress", str(stream), "-o", str(tmp_path / "q.png"), "--model", str(vaelight.path), "--decoder-mismatch", "allow"]) == 0


def test_another_latent_space_is_always_an_error(tmp_path, vaelight, photo):
    sdxl = fake_bundle(tmp_path / "sdxl", model_id="fedcba9876543210")
    manifest = json.loads((sdxl / "manifest.json").read_text())
    manifest.update(latent_space={"name": "sdxl"}, scaling_factor=0.13025)
    (sdxl / "manifest.json").write_text(json.dumps(manifest))
    other = sdlite.load_model(sdxl, session_overrides=fake_sessions())
    assert other.latent_space.name == "sdxl"
    data = compress(photo, model=vaelight)
    for options in ({"model": other, "decoder_mismatch": "allow"}, {"preview": other}):
        with pytest.raises(ModelMismatchError, match="latent space sd1 .* reads latent space sdxl"):
            decompress(data, **options)


def test_streams_of_unknown_space_decode_with_their_own_model_only(tmp_path, vaelight, photo):
    folder = fake_bundle(tmp_path / "odd")
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["scaling_factor"] = 0.3  # no known space scales raw latents so
    (folder / "manifest.json").write_text(json.dumps(manifest))
    odd = sdlite.load_model(folder, session_overrides=fake_sessions())
    data = compress(photo, model=odd)
    assert odd.latent_space is None and info(data)["latent_space"] == "unknown"
    assert decompress(data, model=odd).size == (70, 45)
    with pytest.raises(ModelMismatchError, match="unknown"):
        decompress(data, model=vaelight, decoder_mismatch="allow")


def test_decoder_mismatch_option_is_checked(fake_model, photo):
    with pytest.raises(OptionError, match="error, allow"):
        decompress(compress(photo, model=fake_model), model=fake_model, decoder_mismatch="sometimes")
