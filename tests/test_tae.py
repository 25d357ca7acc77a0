"""The torch-free TAE builder (sdlite.tae), models by name fetched from a hub (sdlite.fetch, served here on
127.0.0.1 only), local AutoencoderTiny folders as models, and a first run without torch."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import sdlite
from sdlite import BundleError, ModelNotFoundError, OptionError, SdliteError, fetch, tae
from sdlite.bundle import read_bundle

from .conftest import EXPORT_STACK, ROOT, SHARED
from .release_server import github, needs_torch, release_files  # noqa: F401 - fixtures
from .tae_folder import TINY_CONFIG, tiny_weights, write_safetensors, write_tae_folder

TAE_NAMES = ("taesd", "taesdxl", "taesd3", "taef1")


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(fetch.ENV_CACHE_DIR, str(tmp_path / "cache"))
    monkeypatch.delenv(fetch.ENV_OFFLINE, raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    return tmp_path / "cache"


@pytest.fixture
def tiny_folder(tmp_path):
    return write_tae_folder(tmp_path / "taesd-diffusers")


def _photo(height=64, width=96):
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1).astype(np.uint8)


# -- the builder -------------------------------------------------------------------------------------------


def test_builds_a_bundle_that_round_trips(tiny_folder, tmp_path):
    manifest = tae.build_bundle(tiny_folder, tmp_path / "built")
    info = read_bundle(tmp_path / "built")
    assert info.latent_space_name == "sd1" and info.model_id == manifest["model_id"] and manifest["model_id_rule"] == "weights"
    assert (info.latent_channels, info.downsample_factor) == (4, 8)
    data = sdlite.compress(_photo(), model=tmp_path / "built", target_bytes=300)
    assert sdlite.decompress(data, model=tmp_path / "built").size == (96, 64)


def test_model_id_names_the_weights(tmp_path):
    first = tae.build_bundle(write_tae_folder(tmp_path / "a" / "taesd"), tmp_path / "one")["model_id"]
    again = tae.build_bundle(write_tae_folder(tmp_path / "b" / "taesd"), tmp_path / "two")["model_id"]  # same weights, another folder
    other = tae.build_bundle(write_tae_folder(tmp_path / "c" / "taesd", seed=1), tmp_path / "three")["model_id"]
    assert first == again != other


def test_half_precision_weights_give_the_same_id_as_their_float32_values(tmp_path):
    weights = {k: v.astype(np.float16) for k, v in tiny_weights(TINY_CONFIG).items()}
    fp16 = write_tae_folder(tmp_path / "h" / "taesd", weights=weights)
    write_safetensors(fp16 / tae.WEIGHTS_FILE, weights, dtype="F16")
    fp32 = write_tae_folder(tmp_path / "f" / "taesd", weights={k: v.astype(np.float32) for k, v in weights.items()})
    assert tae.build_bundle(fp16, tmp_path / "x")["model_id"] == tae.build_bundle(fp32, tmp_path / "y")["model_id"]


@pytest.mark.skipif(not EXPORT_STACK, reason="torch and diffusers not installed: no reference implementation to compare with")
def test_matches_diffusers_autoencoder_tiny(tiny_folder, tmp_path):
    import onnxruntime as ort
    import torch
    from diffusers import AutoencoderTiny

    tae.build_bundle(tiny_folder, tmp_path / "built")
    vae = AutoencoderTiny.from_pretrained(tiny_folder).eval()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 64, 80)).astype(np.float32)
    scaling = sdlite.latent_space.by_name("sd1").scaling_factor
    with torch.no_grad():
        expected_latents = vae.encode(torch.from_numpy(x)).latents.numpy() / scaling
    encoder = ort.InferenceSession(str(tmp_path / "built" / "vae_encoder" / "model.onnx"), providers=["CPUExecutionProvider"])
    params = encoder.run(None, {"sample": x})[0]
    np.testing.assert_allclose(params[:, :4], expected_latents, atol=1e-4)
    assert np.all(params[:, 4:] == tae.LOGVAR)
    z = np.random.default_rng(1).normal(0, 1, (1, 4, 8, 10)).astype(np.float32)
    with torch.no_grad():
        expected = vae.decode(torch.from_numpy(z * scaling)).sample.numpy()
    decoder = ort.InferenceSession(str(tmp_path / "built" / "vae_decoder" / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(decoder.run(None, {"latent_sample": z})[0], expected, atol=1e-4)


@pytest.mark.parametrize("name", TAE_NAMES)
def test_reproduces_the_shared_references(name, tmp_path):
    import onnxruntime as ort

    source, reference = SHARED / "models" / f"{name}-diffusers", SHARED / "models" / name
    if not (source / tae.WEIGHTS_FILE).is_file() or not (reference / "vae_decoder" / "model.onnx").is_file():
        pytest.skip(f"{source} or {reference} absent")
    manifest = tae.build_bundle(source, tmp_path / name)
    assert manifest["latent_space"]["name"] == tae.TINY_AUTOENCODERS[name]
    rng = np.random.default_rng(0)
    feeds = {"vae_encoder": {"sample": rng.uniform(-1, 1, (1, 3, 64, 96)).astype(np.float32)},
             "vae_decoder": {"latent_sample": rng.normal(0, 1, (1, manifest["latent_channels"], 8, 12)).astype(np.float32)
                             / manifest["scaling_factor"]}}
    for component, feed in feeds.items():
        ours = ort.InferenceSession(str(tmp_path / name / component / "model.onnx"), providers=["CPUExecutionProvider"])
        theirs = ort.InferenceSession(str(reference / component / "model.onnx"), providers=["CPUExecutionProvider"])
        np.testing.assert_allclose(ours.run(None, feed)[0], theirs.run(None, feed)[0], atol=1e-4)


@pytest.mark.slow
@pytest.mark.skipif(not EXPORT_STACK, reason="export extra not installed: no torch export to compare ids with")
def test_torch_export_and_builder_agree_on_the_model_id(tiny_folder, tmp_path):
    from export import export_bundle

    built = tae.build_bundle(tiny_folder, tmp_path / "built")["model_id"]
    exported = export_bundle(vae=str(tiny_folder), components=["vae_encoder", "vae_decoder"], output=tmp_path / "exported")
    assert exported["model_id"] == built
    data = sdlite.compress(_photo(), model=tmp_path / "exported", target_bytes=300)
    sdlite.decompress(data, model=tmp_path / "built")  # same id: no decoder_mismatch needed


# -- hostile folders ----------------------------------------------------------------------------------------


def _corrupt(folder: Path, how: str) -> None:
    weights = tiny_weights(TINY_CONFIG)
    path = folder / tae.WEIGHTS_FILE
    if how == "missing tensor":
        weights.pop("decoder.layers.0.bias")
    elif how == "extra tensor":
        weights["encoder.extra.weight"] = np.zeros(3, np.float32)
    elif how == "wrong shape":
        weights["encoder.layers.0.weight"] = np.zeros((8, 3, 5, 5), np.float32)
    if how in ("missing tensor", "extra tensor", "wrong shape"):
        write_safetensors(path, weights)
    elif how == "overlapping tensors":
        write_safetensors(path, {"a": np.zeros(4, np.float32)}, header_extra={"b": {"dtype": "F32", "shape": [2], "data_offsets": [8, 16]}})
    elif how == "offsets past the end":
        write_safetensors(path, {"a": np.zeros(4, np.float32)}, header_extra={"b": {"dtype": "F32", "shape": [4], "data_offsets": [16, 32]}})
    elif how == "huge header size":
        path.write_bytes(struct.pack("<Q", 1 << 62) + b"{}")
    elif how == "bad dtype":
        write_safetensors(path, {"a": np.zeros(4, np.float32)}, header_extra={"b": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}})
    elif how == "not json":
        path.write_bytes(struct.pack("<Q", 4) + b"\xff\xfe[[")
    elif how == "nested json":
        text = b"[" * 100_000 + b"]" * 100_000
        path.write_bytes(struct.pack("<Q", len(text)) + text)
    elif how.startswith("config "):
        key, value = how.split(" ", 2)[1:]
        config = {**TINY_CONFIG, key: json.loads(value)}
        (folder / "config.json").write_text(json.dumps(config))


HOSTILE = ["missing tensor", "extra tensor", "wrong shape", "overlapping tensors", "offsets past the end", "huge header size",
           "bad dtype", "not json", "nested json", 'config act_fn "gelu"', "config latent_channels 0", "config latent_channels 16",
           'config _class_name "AutoencoderKL"', "config encoder_block_out_channels [8, 8, 8, 8, 8, 8, 8, 8]",
           "config num_encoder_blocks [1, 1]", "config encoder_block_out_channels [100000, 8, 8, 8]", 'config upsample_fn "bilinear"',
           "config num_decoder_blocks null"]


@pytest.mark.parametrize("how", HOSTILE)
def test_hostile_folders_are_refused_with_a_clear_error(how, tiny_folder, tmp_path):
    _corrupt(tiny_folder, how)
    with pytest.raises(SdliteError) as caught:
        tae.build_bundle(tiny_folder, tmp_path / "built")
    assert isinstance(caught.value, (BundleError, OptionError)), caught.value
    assert not (tmp_path / "built").exists()


def test_a_folder_without_a_known_name_needs_its_space(tmp_path):
    folder = write_tae_folder(tmp_path / "my-autoencoder")
    with pytest.raises(OptionError, match="sd1, sdxl"):
        tae.build_bundle(folder, tmp_path / "built")
    assert tae.build_bundle(folder, tmp_path / "built", latent_space="sdxl")["latent_space"]["name"] == "sdxl"


# -- models by folder and by name ------------------------------------------------------------------------------


def test_a_local_folder_is_a_model(tiny_folder, cache):
    data = sdlite.compress(_photo(), model=str(tiny_folder), target_bytes=300)
    built = list((cache / "built").iterdir())
    assert len(built) == 1 and built[0].name.startswith("sd1-")
    stamp = (built[0] / "manifest.json").stat().st_mtime_ns
    assert sdlite.decompress(data, model=str(tiny_folder)).size == (96, 64)
    assert (built[0] / "manifest.json").stat().st_mtime_ns == stamp  # built once


def test_offline_the_error_names_the_local_ways(cache, monkeypatch):
    with pytest.raises(ModelNotFoundError, match="a local AutoencoderTiny folder") as caught:  # conftest's hub: nothing listens
        sdlite.load_model("taesd3")
    assert "127.0.0.1" in str(caught.value)
    monkeypatch.setenv(fetch.ENV_OFFLINE, "1")
    with pytest.raises(ModelNotFoundError, match="downloads are off"):
        sdlite.load_model("taef1")


def test_unknown_names_still_list_the_choices(cache):
    with pytest.raises(ModelNotFoundError, match="taesd"):
        sdlite.load_model("taesd4")


# -- a first run without torch ------------------------------------------------------------------------------------

NO_TORCH_SCRIPT = textwrap.dedent("""
    import sys
    class NoTorch:
        BLOCKED = ("torch", "diffusers", "optimum", "transformers")
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.BLOCKED:
                raise ImportError(f"{name} is blocked: sdlite must run without it")
    sys.meta_path.insert(0, NoTorch())
    import numpy as np, sdlite, sdlite.releases as releases
    folder, encoder_blob, decoder_blob = sys.argv[1:]
    releases.RELEASES[("taesd", "9.9")] = releases.Release("taesd", "9.9", "sd1",
        releases.PinnedFile("taesd_encoder.pth", "e" * 40, encoder_blob), releases.PinnedFile("taesd_decoder.pth", "d" * 40, decoder_blob))
    releases.DEFAULT_VERSION["taesd"] = "9.9"
    y, x = np.mgrid[0:64, 0:96]
    photo = np.stack([x * 2, y * 3, x + y], -1).astype(np.uint8)
    for model in (folder, "taesd"):
        data = sdlite.compress(photo, model=model, target_bytes=300)
        print(model, len(data), sdlite.decompress(data, model=model).size)
    assert not any(m.split(".")[0] in NoTorch.BLOCKED for m in sys.modules)
""")


def _run_without_torch(python: str, folder: Path, env: dict, release) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-c", NO_TORCH_SCRIPT, str(folder), release.encoder.blob, release.decoder.blob], capture_output=True,
                          text=True, env=env, timeout=600, cwd=folder.parent)


@needs_torch
def test_first_run_without_torch(tiny_folder, github):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = _run_without_torch(sys.executable, tiny_folder, env, github[1])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("(96, 64)") == 2


@pytest.mark.slow
@needs_torch
def test_runtime_install_alone_compresses_with_tae_models(tiny_folder, github, tmp_path):
    """pip install of the runtime (no extras) into a clean venv, torch blocked: a local folder and a name."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run([python, "-m", "pip", "install", "-q", str(ROOT)], capture_output=True, text=True, timeout=900)
    if install.returncode != 0:
        pytest.skip(f"pip cannot install the runtime here (no package registry?): {install.stderr.strip()[-300:]}")
    listed = subprocess.run([python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True, check=True).stdout
    assert not {p["name"].lower() for p in json.loads(listed)} & {"torch", "diffusers", "optimum", "transformers"}
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = _run_without_torch(python, tiny_folder, env, github[1])
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("(96, 64)") == 2


def test_a_hub_cache_folder_of_links_builds(tmp_path):
    """Hugging Face's cache keeps a snapshot's files as links to blobs: a folder of links is a model too."""
    blobs = write_tae_folder(tmp_path / "blobs")
    snapshot = tmp_path / "snapshots" / "taesd"
    snapshot.mkdir(parents=True)
    for name in ("config.json", tae.WEIGHTS_FILE):
        (snapshot / name).symlink_to(blobs / name)
    assert tae.is_tae_folder(snapshot)
    assert tae.build_bundle(snapshot, tmp_path / "built")["latent_space"]["name"] == "sd1"


def test_a_snapshot_folder_takes_its_space_from_the_recorded_hub_id(tmp_path):
    folder = write_tae_folder(tmp_path / "0123abcd", config={**TINY_CONFIG, "_name_or_path": "madebyollin/taesdxl"})
    assert tae.build_bundle(folder, tmp_path / "built")["latent_space"]["name"] == "sdxl"




# -- the third hostile-input probe ------------------------------------------------------------------------------


def _header_only_safetensors(path: Path, header: dict, data_bytes: int) -> None:
    encoded = json.dumps(header).encode()
    with open(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(encoded)) + encoded)
        handle.truncate(8 + len(encoded) + data_bytes)


def test_many_tensors_over_the_same_bytes_cost_nothing(tmp_path):
    """2,000 tensors named over one 4 MB span: refused before any tensor is copied (3.78 GB and a MemoryError before)."""
    import resource

    shape = [1024, 1024]
    header = {f"t{i}": {"dtype": "F32", "shape": shape, "data_offsets": [0, 4 << 20]} for i in range(2000)}
    path = tmp_path / "w.safetensors"
    _header_only_safetensors(path, header, 4 << 20)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(BundleError, match="overlap"):
        tae.read_safetensors(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 64 * 1024  # KB: well under 64 MB more


def test_a_dtype_that_is_not_a_string_is_a_bundle_error(tmp_path):
    path = tmp_path / "w.safetensors"
    _header_only_safetensors(path, {"t": {"dtype": ["F32"], "shape": [1], "data_offsets": [0, 4]}}, 4)
    with pytest.raises(BundleError, match="dtype"):
        tae.read_safetensors(path)


def test_an_oversized_weights_file_is_refused_before_it_is_hashed(tmp_path, monkeypatch):
    folder = write_tae_folder(tmp_path / "taesd")
    with open(folder / tae.WEIGHTS_FILE, "r+b") as handle:
        handle.truncate(tae.MAX_WEIGHTS_BYTES + 1)  # sparse: no disk used
    hashed = []
    monkeypatch.setattr(fetch, "file_sha256", lambda path: hashed.append(path) or "0" * 64)
    with pytest.raises(BundleError, match="over the"):
        sdlite.load_model(str(folder))
    assert not hashed
