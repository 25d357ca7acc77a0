"""The pipeline on fake sessions: no model files, no onnxruntime graph."""

import threading

import numpy as np
import pytest
from PIL import Image

import sdlite
from sdlite import ModelMismatchError, OptionError, compress, decompress, info, load_model

from .fakes import FakeEncoder, fake_bundle, fake_sessions


def test_round_trip_keeps_size_and_is_close(fake_model, photo):
    stats = {}
    data = compress(photo, model=fake_model, stats=stats)
    out = decompress(data, model=fake_model)
    assert isinstance(out, Image.Image) and out.mode == "RGB" and out.size == (70, 45)
    assert stats["bytes"] == len(data) and stats["clipped"] == 0 and stats["bpp"] > 0
    # the fake VAE averages 8x8 blocks, so compare block means
    expected = photo[:40, :64].astype(float).reshape(5, 8, 8, 8, 3).mean(axis=(1, 3))
    got = np.asarray(out)[:40, :64].astype(float).reshape(5, 8, 8, 8, 3).mean(axis=(1, 3))
    assert np.abs(got - expected).mean() < 3


def test_same_input_same_bytes_and_pixels(fake_model, photo):
    a, b = compress(photo, model=fake_model), compress(photo, model=fake_model)
    assert a == b
    assert np.array_equal(np.asarray(decompress(a, model=fake_model)), np.asarray(decompress(b, model=fake_model)))


def test_other_model_is_refused_naming_both_ids(tmp_path, fake_model, photo):
    other = load_model(fake_bundle(tmp_path / "other", "ffffffffffffffff"), session_overrides=fake_sessions())
    data = compress(photo, model=fake_model)
    with pytest.raises(ModelMismatchError, match="0123456789abcdef.*ffffffffffffffff"):
        decompress(data, model=other)


def test_info_needs_no_model(fake_model, photo):
    meta = info(compress(photo, model=fake_model))
    assert meta["model_id"] == "0123456789abcdef" and (meta["width"], meta["height"]) == (70, 45)
    assert meta["latent_shape"] == [4, 6, 9]


def test_latent_api_round_trip(fake_model):
    z = np.random.default_rng(0).normal(0, 4, (1, 4, 6, 9)).astype(np.float32)
    for options in ({"method": "palette"}, {"method": "entropy", "quality": 95}):
        data = sdlite.compress_latents(z, model=fake_model, **options)
        back = sdlite.decompress_latents(data)
        assert back.shape == z.shape and np.abs(back - z).max() < 1.0, options
    assert info(data)["width"] == 72
    with pytest.raises(OptionError, match="model"):
        sdlite.compress_latents(z)
    with pytest.raises(OptionError, match="shape"):
        sdlite.compress_latents(z[0, 0], model_id="0123456789abcdef")
    with pytest.raises(OptionError, match="NaN"):
        sdlite.compress_latents(np.full((4, 2, 2), np.nan, np.float32), model_id="0123456789abcdef")


def test_options_are_checked(fake_model, photo):
    with pytest.raises(OptionError, match="palette, entropy"):
        compress(photo, model=fake_model, method="jpeg")
    with pytest.raises(OptionError, match="dither must be a number from 0.0 to 1.0"):
        compress(photo, model=fake_model, method="palette", dither=2.0)
    with pytest.raises(OptionError, match="'dither' does not apply to method 'entropy'"):
        compress(photo, model=fake_model, dither=0.5)  # the default method is entropy
    with pytest.raises(OptionError, match="'target_bytes' does not apply to method 'palette' .its options: dither"):
        compress(photo, model=fake_model, method="palette", target_bytes=100)


def test_concurrent_compress_calls_agree(fake_model, photo):
    expected = compress(photo, model=fake_model)
    results = [None] * 6

    def work(i):
        results[i] = compress(photo, model=fake_model)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == expected for r in results)


def test_a_component_the_bundle_lacks_is_named(tmp_path):
    model = load_model(fake_bundle(tmp_path / "decoder-only"), session_overrides={"vae_decoder": fake_sessions()["vae_decoder"]})
    with pytest.raises(sdlite.ModelNotFoundError, match="vae_encoder"):
        compress(np.zeros((8, 8, 3), np.uint8), model=model)


def test_a_low_quality_on_a_flat_picture_codes_at_full_size(taesd):
    """quality=1 on a flat 512x512 picture with TAESD: the reduced scale's target (the full-size estimate) is below
    the smallest stream of the smaller image, so the picture is coded at full size with that quality (was an
    OptionError naming a target_bytes nobody asked for)."""
    import sdlite

    data = sdlite.compress(np.zeros((512, 512, 3), np.uint8), model=taesd, quality=1)
    assert sdlite.info(data)["scale"] == 1.0
