"""The runtime on a bundle made by `export --tiny` (random weights, full pipeline with U-Net)."""

import json

import numpy as np
import pytest

from sdlite import ModelNotFoundError, compress, decompress, load_model
from sdlite.model import Model


def test_export_then_compress_and_decompress_with_denoise(tiny_bundle, photo):
    model = load_model(tiny_bundle)
    assert model.has_unet and model.downsample_factor == 8
    data = compress(photo, model=model)
    with_unet = decompress(data, model=model)
    without = decompress(data, model=model, denoise=False)
    assert with_unet.size == without.size == (70, 45)
    assert not np.array_equal(np.asarray(with_unet), np.asarray(without))  # the U-Net ran
    again = decompress(data, model=model, denoise_steps=2, seed=0)
    assert np.array_equal(np.asarray(with_unet), np.asarray(again))
    other_seed = decompress(data, model=model, seed=1)
    assert other_seed.size == (70, 45)
    assert not np.array_equal(np.asarray(other_seed), np.asarray(with_unet))  # the seed drives the denoising noise


def test_manifestless_folder_is_named_by_its_files(tiny_bundle, tmp_path):
    """Without a manifest there are no weights to name: the id hashes the ONNX files (the rule bundles made
    before weights ids still carry), the same for every copy of those files."""
    import shutil

    from sdlite import manifest as manifests

    copy = tmp_path / "plain"
    shutil.copytree(tiny_bundle, copy)
    (copy / "manifest.json").unlink()
    plain = Model(copy)
    recorded = json.loads((tiny_bundle / "manifest.json").read_text())
    assert plain.model_id == manifests.files_model_id(recorded["components"]) != recorded["model_id"]
    assert plain.latent_channels == 4 and plain.downsample_factor == 8 and plain.has_unet


def test_model_resolution_by_name_env_and_hint(tiny_bundle, monkeypatch, tmp_path):
    monkeypatch.setenv("SDLITE_MODELS_DIR", str(tiny_bundle.parent))
    monkeypatch.delenv("SDLITE_MODEL", raising=False)
    assert load_model("tiny").path == tiny_bundle
    assert load_model(None).path == tiny_bundle  # the only bundle in the folder
    monkeypatch.setenv("SDLITE_MODEL", str(tiny_bundle))
    assert load_model(None).path == tiny_bundle
    monkeypatch.setenv("SDLITE_MODELS_DIR", str(tmp_path))
    monkeypatch.delenv("SDLITE_MODEL")
    with pytest.raises(ModelNotFoundError, match="cannot fetch taesd@1.3"):  # none there: the default release, offline here
        load_model(None)
    with pytest.raises(ModelNotFoundError, match="python -m export --tiny"):
        load_model("nonexistent")


class _Recording:
    """Forwards to a real session and records the spatial shape of every input it runs on."""

    def __init__(self, session):
        self.session, self.shapes = session, []

    def get_inputs(self):
        return self.session.get_inputs()

    def get_outputs(self):
        return self.session.get_outputs()

    def run(self, names, feed):
        first = self.session.get_inputs()[0].name
        self.shapes.append(tuple(feed[first].shape[-2:]))
        return self.session.run(names, feed)


def test_large_images_go_through_every_network_by_tiles(tiny_bundle):
    plain = load_model(tiny_bundle)
    recorders = {name: _Recording(plain.session(name)) for name in ("vae_encoder", "vae_decoder", "unet")}
    model = load_model(tiny_bundle, session_overrides=recorders)
    y, x = np.mgrid[0:300, 0:420]
    image = np.stack([(x // 3) % 256, (y // 2) % 256, ((x + y) // 4) % 256], axis=2).astype(np.uint8)
    data = compress(image, model=model, tile=32, scale=1)  # 38x53 latent cells: 2x3 tiles of 27x29, overlapping by >= 16
    assert recorders["vae_encoder"].shapes == [(27 * 8, 29 * 8)] * 6
    out = decompress(data, model=model, tile=32, denoise_steps=2)
    assert out.size == (420, 300)
    assert recorders["unet"].shapes == [(28, 30)] * 12  # 2 steps x 6 tiles, sides even for the U-Net
    assert recorders["vae_decoder"].shapes == [(27, 29)] * 6
    assert np.array_equal(np.asarray(out), np.asarray(decompress(data, model=model, tile=32, denoise_steps=2)))
    whole = decompress(data, model=model, tile=None)
    assert whole.size == out.size and recorders["vae_decoder"].shapes[-1] == (38, 53)
    assert recorders["unet"].shapes[-1] == (38, 54)  # one call, padded to the U-Net's multiple
