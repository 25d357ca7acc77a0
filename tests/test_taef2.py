"""FLUX.2's latent space and TAEF2 (issue 25): the GroupNorm branch of the graph builder against the reference
network, the published files built with and without torch, the flux2 stream, its rate control and header
checks, and tiles that stay the whole-image computation."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading

import numpy as np
import pytest

import sdlite
from sdlite import fetch, latent_space as spaces, releases, split, tae
from sdlite.errors import ModelMismatchError, OptionError, SdliteError
from sdlite.methods.entropy import channels
from sdlite.tiling import run_tiled

from .conftest import SHARED
from .release_server import HAS_TORCH, needs_torch

TAEF2 = SHARED / "models" / "taef2"
TAEF2_PTH = SHARED / "models" / "taef2-pth"
needs_taef2 = pytest.mark.skipif(not (TAEF2_PTH / "taef2_decoder.pth").is_file() or not (TAEF2 / "vae_decoder" / "model.onnx").is_file(),
                                 reason="../shared/models/taef2 and taef2-pth (the published TAEF2) are not here")
SPACE = spaces.by_name("flux2")


def _random_taef2_weights(seed: int = 0) -> dict:
    """TAEF2's architecture (full size) with random weights under AutoencoderTiny's names, made by the torch
    reference network (export.tae_original) so that both sides share them."""
    import torch

    from export.tae_original import _modules

    torch.manual_seed(seed)
    network = _modules(SPACE.channels, pool=True)
    with torch.no_grad():
        for name, value in network.named_parameters():
            if ".pool.1." in name:  # GroupNorm affine: away from (1, 0) so that it matters
                value.copy_(torch.randn_like(value) * 0.3 + (1.0 if name.endswith("weight") else 0.0))
    return network, {name: value.detach().numpy().copy() for name, value in network.state_dict().items()}


@pytest.fixture(scope="module")
def random_taef2(tmp_path_factory):
    if not HAS_TORCH:
        pytest.skip("the reference network needs torch (the export extra)")
    network, weights = _random_taef2_weights()
    path = tmp_path_factory.mktemp("taef2") / "bundle"
    tae.build_from_weights(tae.original_config(weights, SPACE), weights, SPACE, path, origin={"kind": "test"})
    return network, path


def test_the_space_and_its_transform():
    assert (SPACE.id, SPACE.channels, SPACE.factor, SPACE.scaling_factor, SPACE.shift_factor) == (5, 32, 8, 1.0, None)
    transform = channels.for_space("flux2")
    assert (transform.id, transform.unit, transform.channels, transform.since_version) == (5, 4.4, 32, 5)
    assert transform.basis == channels.TRANSFORMS[4].basis and channels.TRANSFORMS[4].weights is None  # version 4's
    assert spaces.from_config(32, 8, 1.0, 0.0) is SPACE
    reconstruction = transform._reconstruction()
    assert np.abs(reconstruction.T @ reconstruction - np.eye(32)).max() < 2e-4


@needs_torch
def test_the_graph_builder_computes_the_reference_network(random_taef2):
    """sdlite.tae's numpy+onnx graph (GroupNorm as InstanceNormalization) against torch, random weights."""
    import onnxruntime as ort
    import torch

    network, path = random_taef2
    rng = np.random.default_rng(1)
    pixels = np.clip(rng.normal(0, 0.5, (1, 3, 64, 96)), -1, 1).astype(np.float32)
    latents = rng.normal(0, 1, (1, 32, 8, 12)).astype(np.float32)
    with torch.no_grad():
        want_latents = network.encode(torch.from_numpy(pixels)).latents.numpy()
        want_pixels = network.decode(torch.from_numpy(latents)).sample.numpy()
    encoder = ort.InferenceSession(str(path / "vae_encoder" / "model.onnx"), providers=["CPUExecutionProvider"])
    decoder = ort.InferenceSession(str(path / "vae_decoder" / "model.onnx"), providers=["CPUExecutionProvider"])
    got_latents = encoder.run(None, {"sample": pixels})[0]
    got_pixels = decoder.run(None, {"latent_sample": latents})[0]
    assert np.abs(got_latents[:, :32] - want_latents).max() < 1e-4
    assert np.all(got_latents[:, 32:] == tae.LOGVAR)
    assert np.abs(got_pixels - want_pixels).max() < 1e-4


def test_a_pool_branch_where_the_config_has_none_is_refused(tmp_path):
    weights = {"decoder.layers.2.pool.0.weight": np.zeros((256, 64, 1, 1), np.float32)}
    config = {**tae.STANDARD_CONFIG, "latent_channels": 32}
    with pytest.raises(SdliteError):
        tae.build_from_weights(config, weights, SPACE, tmp_path / "x", origin={"kind": "test"})


@needs_taef2
def test_the_published_files_build_the_shared_bundle_without_torch(tmp_path):
    import onnxruntime as ort

    manifest = tae.build_from_pth(TAEF2_PTH, tmp_path / "taef2")
    assert manifest["latent_space"]["name"] == "flux2"
    rng = np.random.default_rng(2)
    for component, name, shape in (("vae_decoder", "latent_sample", (1, 32, 10, 14)), ("vae_encoder", "sample", (1, 3, 80, 112))):
        x = np.clip(rng.normal(0, 0.6, shape), -1, 1).astype(np.float32) if name == "sample" else rng.normal(0, 1, shape).astype(np.float32)
        ours = ort.InferenceSession(str(tmp_path / "taef2" / component / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {name: x})[0]
        theirs = ort.InferenceSession(str(TAEF2 / component / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {name: x})[0]
        assert np.abs(ours - theirs).max() < 1e-4


@needs_taef2
@needs_torch
def test_the_torch_export_of_the_published_files_has_the_same_model_id(tmp_path):
    import onnxruntime as ort

    from export import export_bundle

    exported = export_bundle(tmp_path / "exported", vae=str(TAEF2_PTH), components=["vae_encoder", "vae_decoder"])
    built = tae.build_from_pth(TAEF2_PTH, tmp_path / "built")
    assert exported["model_id"] == built["model_id"]
    x = np.random.default_rng(3).normal(0, 1, (1, 32, 6, 9)).astype(np.float32)
    a = ort.InferenceSession(str(tmp_path / "exported" / "vae_decoder" / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"latent_sample": x})[0]
    b = ort.InferenceSession(str(TAEF2 / "vae_decoder" / "model.onnx"), providers=["CPUExecutionProvider"]).run(None, {"latent_sample": x})[0]
    assert np.abs(a - b).max() < 1e-4


@needs_taef2
def test_taef2_by_name_comes_from_its_pinned_release(tmp_path, monkeypatch):
    """`model="taef2"` fetches the two files at the pinned commit (served here from the shared copies, which match
    their pinned git blobs) and builds the bundle without torch."""
    release = releases.lookup("taef2")
    root = tmp_path / "github"
    for pinned in (release.encoder, release.decoder):
        folder = root / releases.REPOSITORY / "raw" / pinned.commit
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(TAEF2_PTH / pinned.file, folder / pinned.file)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(fetch.ENV_HUB_URL, f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setenv(fetch.ENV_CACHE_DIR, str(tmp_path / "cache"))
        monkeypatch.delenv(fetch.ENV_OFFLINE, raising=False)
        model = sdlite.load_model("taef2")
    finally:
        server.shutdown()
        server.server_close()
    assert model.latent_space_name == "flux2"
    assert model.model_id == tae.build_from_pth(TAEF2_PTH, tmp_path / "local")["model_id"]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _smooth(seed, shape):
    rng = np.random.default_rng(seed)
    field = rng.normal(0, 1, shape).cumsum(axis=2) / 6
    return (field / SPACE.coding_unit * 4).astype(np.float32)


def test_a_flux2_latent_round_trip_names_its_space_and_transform():
    z = _smooth(4, (32, 12, 16))
    data = sdlite.compress_latents(z, model_id="0123456789abcdef", latent_space="flux2", quality=90)
    meta = sdlite.info(data)
    assert meta["latent_space"] == "flux2" and meta["latent_shape"] == [32, 12, 16]
    back = sdlite.decompress_latents(data)
    assert back.shape == (1, 32, 12, 16)
    assert np.abs(back[0] - z).mean() < 0.2 * np.abs(z).mean()


def test_flux2_rate_control_keeps_to_its_target():
    z = _smooth(5, (32, 24, 32))
    for target in (600, 2000, 6000):
        data = sdlite.compress_latents(z, model_id="0123456789abcdef", latent_space="flux2", target_bytes=target)
        assert target * 0.8 <= len(data) <= target


def test_a_latent_of_another_channel_count_is_refused_for_flux2():
    with pytest.raises(OptionError, match="32"):
        sdlite.compress_latents(_smooth(6, (16, 8, 8)), model_id="0123456789abcdef", latent_space="flux2")


@needs_torch
def test_a_flux2_stream_is_refused_by_a_decoder_of_another_space(random_taef2, tmp_path):
    _, path = random_taef2
    data = sdlite.compress_latents(_smooth(7, (32, 8, 8)), model_id="0123456789abcdef", latent_space="flux2")
    other = tmp_path / "sd3"
    config = {**tae.STANDARD_CONFIG, "latent_channels": 16, "midblock_pool": False}
    from .tae_folder import tiny_weights

    tae.build_from_weights(config, tiny_weights(config, seed=1), spaces.by_name("sd3"), other, origin={"kind": "test"})
    with pytest.raises(ModelMismatchError, match="flux2"):
        sdlite.decompress(data, model=other, decoder_mismatch="allow")
    image = sdlite.decompress(data, model=path, decoder_mismatch="allow")  # any decoder of the space may read it
    assert image.size == (64, 64)


@needs_torch
def test_tiles_of_a_network_with_group_norms_are_the_whole_image_computation(random_taef2):
    """The split (sdlite.split) keeps the GroupNorm layers whole: tiled and whole decodes and encodes agree as
    closely as for a network without them, where tiles of the unsplit graph do not."""
    import onnxruntime as ort

    _, path = random_taef2
    model = sdlite.load_model(path)
    latents = _smooth(8, (1, 32, 40, 72))[0][None] * SPACE.coding_unit / 4
    whole = model.decode(latents, tile=None)
    tiled = model.decode(latents, tile=32)
    parts = split.split_for_tiles(path / "vae_decoder" / "model.onnx", "vae_decoder")
    assert parts is not None and parts.tiled == "tail"
    session = ort.InferenceSession(str(path / "vae_decoder" / "model.onnx"), providers=["CPUExecutionProvider"])
    naive = run_tiled(lambda piece: session.run(None, {"latent_sample": piece})[0], latents, cell_in=1, cell_out=8, tile=32)
    assert np.abs(tiled - whole).mean() < 0.1 * np.abs(naive - whole).mean()
    assert np.abs(tiled - whole).max() < 0.05
    pixels = np.clip(np.random.default_rng(9).normal(0, 0.5, (1, 3, 320, 576)), -1, 1).astype(np.float32)
    assert np.abs(model.encode(pixels, tile=32) - model.encode(pixels, tile=None)).max() < 0.05


def test_a_network_without_norms_is_not_split(tmp_path):
    from .tae_folder import write_tae_folder

    folder = write_tae_folder(tmp_path / "taesd-diffusers")
    tae.build_bundle(folder, tmp_path / "bundle")
    assert split.split_for_tiles(tmp_path / "bundle" / "vae_decoder" / "model.onnx", "vae_decoder") is None


def test_a_folder_of_damaged_pth_files_is_a_clear_error_and_leaves_no_bundle(tmp_path, monkeypatch):
    """A .pth pair that is not a state dict (a truncated zip, text) fails with an sdlite error naming the file,
    before any bundle is named in the cache; a folder with two encoders is not a model."""
    monkeypatch.setenv(fetch.ENV_CACHE_DIR, str(tmp_path / "cache"))
    folder = tmp_path / "taef2-pth"
    folder.mkdir()
    (folder / "taef2_encoder.pth").write_bytes(b"PK\x03\x04" + b"\x00" * 40)
    (folder / "taef2_decoder.pth").write_text("not a state dict")
    with pytest.raises(SdliteError, match="taef2_"):
        sdlite.load_model(folder)
    assert not list((tmp_path / "cache").rglob("manifest.json"))
    (folder / "other_encoder.pth").write_bytes(b"")
    assert tae.pth_files(folder) is None
