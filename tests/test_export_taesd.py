"""Exporting diffusers' AutoencoderTiny (the TAE family: TAESD, TAESDXL, TAESD3, TAEF1) offline, from
../shared/models/NAME-diffusers (the hub's madebyollin/NAME layout), against the ONNX bundles
../shared/models/NAME."""

import json

import numpy as np
import pytest

from .conftest import EXPORT_STACK, SHARED

pytestmark = [pytest.mark.skipif(not EXPORT_STACK, reason="export extra not installed (pip install -e .[export])"), pytest.mark.slow]

TAESD_DIFFUSERS = SHARED / "models" / "taesd-diffusers"
TAESD_ONNX = SHARED / "models" / "taesd"


@pytest.fixture(scope="module")
def taesd_bundle(tmp_path_factory):
    if not (TAESD_DIFFUSERS / "config.json").is_file() or not (TAESD_ONNX / "vae_decoder" / "model.onnx").is_file():
        pytest.skip(f"TAESD folders absent: {TAESD_DIFFUSERS}, {TAESD_ONNX}")
    from export import export_bundle

    out = tmp_path_factory.mktemp("taesd") / "taesd"
    export_bundle(out, vae=str(TAESD_DIFFUSERS), components=["vae_encoder", "vae_decoder"])
    return out


@pytest.mark.parametrize("name,space,channels,scale", [("taesdxl", "sdxl", 4, 5.6), ("taesd3", "sd3", 16, 0.4), ("taef1", "flux", 16, 1.9)])
def test_every_tae_space_exports_from_its_name_and_matches_its_reference(tmp_path, name, space, channels, scale):
    """The latent space comes from the folder's name (as from madebyollin/NAME on the hub); the export
    reproduces the reference bundle to 1e-4 and its streams name the space."""
    import onnxruntime as ort

    from export import export_bundle
    from sdlite import compress, decompress, info, load_model

    source, reference = SHARED / "models" / f"{name}-diffusers", SHARED / "models" / name
    if not (source / "config.json").is_file() or not (reference / "vae_decoder" / "model.onnx").is_file():
        pytest.skip(f"{name} folders absent: {source}, {reference}")
    manifest = export_bundle(tmp_path / name, vae=str(source), components=["vae_encoder", "vae_decoder"])
    assert manifest["latent_space"]["name"] == space and manifest["latent_channels"] == channels
    rng = np.random.default_rng(1)
    cases = {"vae_encoder": ("sample", rng.uniform(-1, 1, (1, 3, 48, 80))), "vae_decoder": ("latent_sample", rng.normal(0, scale, (1, channels, 6, 10)))}
    for component, (input_name, value) in cases.items():
        value = value.astype(np.float32)
        ours = ort.InferenceSession(str(tmp_path / name / component / "model.onnx")).run(None, {input_name: value})[0]
        theirs = ort.InferenceSession(str(reference / component / "model.onnx")).run(None, {input_name: value})[0]
        assert ours.shape == theirs.shape and np.abs(ours - theirs).max() <= 1e-4, component
    model = load_model(tmp_path / name)
    photo = (rng.uniform(0, 255, (40, 56, 3))).astype(np.uint8)
    data = compress(photo, model=model)
    assert info(data)["latent_space"] == space and decompress(data, model=model).size == (56, 40)


def test_exported_taesd_matches_the_reference_bundle(taesd_bundle):
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    cases = {"vae_encoder": ("sample", rng.uniform(-1, 1, (2, 3, 48, 80))), "vae_decoder": ("latent_sample", rng.normal(0, 4, (2, 4, 6, 10)))}
    for component, (name, value) in cases.items():
        value = value.astype(np.float32)
        ours = ort.InferenceSession(str(taesd_bundle / component / "model.onnx")).run(None, {name: value})[0]
        reference = ort.InferenceSession(str(TAESD_ONNX / component / "model.onnx")).run(None, {name: value})[0]
        assert ours.shape == reference.shape
        assert np.abs(ours - reference).max() < 1e-4, component


def test_taesd_manifest_names_the_latent_space(taesd_bundle):
    from sdlite import load_model

    manifest = json.loads((taesd_bundle / "manifest.json").read_text())
    assert manifest["vae_class"] == "AutoencoderTiny" and manifest["latent_space"]["name"] == "sd1"
    assert manifest["scaling_factor"] == pytest.approx(0.18215)  # raw latents, not AutoencoderTiny's 1.0
    assert manifest["source"] == {"kind": "local", "model": None, "revision": None, "vae": str(TAESD_DIFFUSERS.resolve())}
    assert manifest["scheduler"] is None and not (taesd_bundle / "scheduler").exists()
    for entry in manifest["components"].values():
        assert entry["validation_max_abs_diff"] < 1e-4
    model = load_model(taesd_bundle)
    assert model.latent_space.name == "sd1" and not model.has_unet


def test_taesd_as_the_vae_of_a_full_bundle(tmp_path, photo):
    if not (TAESD_DIFFUSERS / "config.json").is_file():
        pytest.skip(f"TAESD folder absent: {TAESD_DIFFUSERS}")
    from export import export_bundle
    from export.tiny import save_tiny_pipeline

    from sdlite import compress, decompress, load_model

    pipeline = save_tiny_pipeline(tmp_path / "pipeline")
    manifest = export_bundle(tmp_path / "full", model=str(pipeline), vae=str(TAESD_DIFFUSERS))
    assert set(manifest["components"]) == {"vae_encoder", "vae_decoder", "unet"}
    assert manifest["latent_space"]["name"] == "sd1"  # the pipeline's VAE says so
    model = load_model(tmp_path / "full")
    data = compress(photo, model=model)
    assert decompress(data, model=model).size == (70, 45)  # U-Net denoising, then TAESD's decoder
    assert decompress(data, model=model, denoise=False).size == (70, 45)


def test_autoencoder_tiny_of_another_space_is_refused(tmp_path):
    from diffusers import AutoencoderTiny

    from export import ExportError, export_bundle

    folder = tmp_path / "tiny16"  # a name that does not say its space
    AutoencoderTiny(latent_channels=16, encoder_block_out_channels=(8, 8, 8, 8), decoder_block_out_channels=(8, 8, 8, 8)).save_pretrained(folder)
    with pytest.raises(ExportError, match="16 latent channels and its name does not say its latent space; pass --latent-space .sd3, flux"):
        export_bundle(tmp_path / "models" / "taesd3", vae=str(folder), components=["vae_encoder", "vae_decoder"])
    with pytest.raises(ExportError, match="16 latent channels but latent space sd1 has 4.*sd3, flux"):
        export_bundle(tmp_path / "models" / "taesd3", vae=str(folder), components=["vae_encoder", "vae_decoder"], latent_space="sd1")
    assert not (tmp_path / "models").exists() or list((tmp_path / "models").iterdir()) == []
    manifest = export_bundle(tmp_path / "models" / "ok", vae=str(folder), components=["vae_decoder"], latent_space="sd3")
    assert manifest["latent_space"]["name"] == "sd3" and manifest["latent_channels"] == 16


def test_a_folder_of_neither_layout_is_refused(tmp_path):
    from export import ExportError, export_bundle

    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("not a model")
    with pytest.raises(ExportError, match="neither a VAE folder .* nor a pipeline folder"):
        export_bundle(tmp_path / "out", vae=str(tmp_path / "empty"), components=["vae_encoder", "vae_decoder"])
    with pytest.raises(ExportError, match="not a diffusers pipeline folder"):
        export_bundle(tmp_path / "out", model=str(tmp_path / "empty"))
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("argv", [
    ["--vae", "madebyollin/taesd", "--components", "vae_encoder", "vae_decoder"],  # the README's quick start
    [],  # the README's quality path: SD 1.5 from the hub
])
def test_quick_start_commands_fail_offline_with_one_line_naming_model_path(argv, tmp_path, monkeypatch, capsys):
    from export.__main__ import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-cache"))
    code = main([*argv, "--output", str(tmp_path / "bundle")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len([line for line in err if line.startswith("error:")]) == 1 and "Traceback" not in "\n".join(err)
    assert "--model PATH" in err[-1] and "unreachable" in err[-1]
    assert not (tmp_path / "bundle").exists()
