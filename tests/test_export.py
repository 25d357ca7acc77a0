"""The export package on the tiny random pipeline (CI, no network)."""

import json

import numpy as np
import pytest

from .conftest import EXPORT_STACK

pytestmark = [pytest.mark.skipif(not EXPORT_STACK, reason="export extra not installed (pip install -e .[export])"), pytest.mark.slow]


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if ".partial-" in p.name or p.name.endswith(".old")]


def test_manifest_contents(tiny_bundle):
    from sdlite.files import file_sha256
    from sdlite.manifest import component_digest, derive_model_id

    manifest = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["bundle_format"] == 1
    assert manifest["source"]["kind"] == "tiny"
    assert set(manifest["components"]) == {"vae_encoder", "vae_decoder", "unet"}
    for name, entry in manifest["components"].items():
        assert (tiny_bundle / entry["file"]).is_file() and (tiny_bundle / name / "config.json").is_file()
        for f in entry["files"]:
            assert file_sha256(tiny_bundle / f["path"]) == f["sha256"]
            assert (tiny_bundle / f["path"]).stat().st_size == f["size"]
        assert 0 <= entry["validation_max_abs_diff"] < 1e-3
    digests = [component_digest([f["sha256"] for f in manifest["components"][c]["files"]]) for c in ("vae_encoder", "vae_decoder")]
    assert manifest["model_id_rule"] == "weights" and len(manifest["model_id"]) == 16
    assert manifest["model_id"] != derive_model_id(*digests)  # the weights name it, not the ONNX files
    assert manifest["scaling_factor"] == pytest.approx(0.18215)
    assert manifest["latent_channels"] == 4 and manifest["downsample_factor"] == 8 and manifest["opset"] == 17
    assert manifest["exporter"]["torch"] and manifest["exporter"]["optimum"]
    uncond = np.load(tiny_bundle / manifest["uncond_embedding"])
    assert uncond.shape == (1, 77, 32) and uncond.dtype == np.float32
    assert json.loads((tiny_bundle / manifest["scheduler"]).read_text())["beta_schedule"] == "scaled_linear"


def test_refuses_to_overwrite_without_force(tiny_bundle):
    from export import ExportError, export_bundle

    before = (tiny_bundle / "manifest.json").read_bytes()
    with pytest.raises(ExportError, match="--force"):
        export_bundle(tiny_bundle, tiny=True)
    assert (tiny_bundle / "manifest.json").read_bytes() == before


def test_vae_only_export_and_force_replace(tmp_path):
    from export import export_bundle

    from sdlite import load_model

    out = tmp_path / "vae"
    first = export_bundle(out, tiny=True, components=["vae_encoder", "vae_decoder"])
    assert set(first["components"]) == {"vae_encoder", "vae_decoder"} and first["uncond_embedding"] is None
    assert not (out / "unet").exists()
    model = load_model(out)
    assert not model.has_unet
    second = export_bundle(out, tiny=True, components=["vae_decoder", "vae_encoder"], force=True, validate=False)
    assert second["model_id"] == first["model_id"]  # same weights, same id
    assert _leftovers(tmp_path) == []


def _wrap_export_models(monkeypatch, after):
    import optimum.exporters.onnx as onnx_exporters

    original = onnx_exporters.export_models

    def wrapped(models, output_dir, **kwargs):
        result = original(models, output_dir, **kwargs)
        after(next(iter(models)), output_dir)
        return result

    monkeypatch.setattr(onnx_exporters, "export_models", wrapped)


def test_tampered_weights_fail_validation_and_leave_nothing(tmp_path, monkeypatch):
    import onnx
    from onnx import numpy_helper

    from export import ValidationError, export_bundle

    def tamper(name, folder):
        path = folder / name / "model.onnx"
        graph = onnx.load(str(path))
        biggest = max(graph.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        biggest.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(biggest) * 1.5, biggest.name))
        onnx.save(graph, str(path))

    _wrap_export_models(monkeypatch, tamper)
    with pytest.raises(ValidationError, match="vae_encoder: ONNX differs from PyTorch"):
        export_bundle(tmp_path / "bad", tiny=True, components=["vae_encoder"])
    assert not (tmp_path / "bad").exists() and _leftovers(tmp_path) == []


def test_tiny_tolerance_fails_validation(tmp_path):
    from export import ValidationError, export_bundle

    with pytest.raises(ValidationError, match="tolerance"):
        export_bundle(tmp_path / "strict", tiny=True, components=["vae_decoder"], atol=1e-12)
    assert not (tmp_path / "strict").exists()


def test_interrupted_export_leaves_nothing(tmp_path, monkeypatch):
    from export import export_bundle

    def interrupt(name, folder):
        if name == "vae_decoder":
            raise KeyboardInterrupt

    _wrap_export_models(monkeypatch, interrupt)
    with pytest.raises(KeyboardInterrupt):
        export_bundle(tmp_path / "cut", tiny=True)
    assert list(tmp_path.iterdir()) == []


def test_unreachable_hub_gives_one_clear_message(tmp_path, monkeypatch, capsys):
    import export.sources
    from export.__main__ import main

    monkeypatch.setattr(export.sources, "hub_reachable", lambda timeout=5.0: False)
    code = main(["--model", "example-org/not-cached-anywhere", "--output", str(tmp_path / "hub"), "--components", "vae_decoder"])
    err = capsys.readouterr().err
    assert code == 2
    assert "Traceback" not in err
    assert "unreachable" in err and "--model PATH" in err and "--tiny" in err
    assert not (tmp_path / "hub").exists()


def test_local_diffusers_folder_source(tmp_path):
    from export import export_bundle
    from export.tiny import save_tiny_pipeline

    folder = save_tiny_pipeline(tmp_path / "pipeline")
    manifest = export_bundle(tmp_path / "local", model=str(folder), components=["vae_encoder", "vae_decoder"])
    assert manifest["source"]["kind"] == "local" and manifest["source"]["model"] == str(folder.resolve())


def test_cli_help_lists_every_option(capsys):
    from export.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model", "--revision", "--vae", "--tiny", "--output", "--components", "--dtype", "--opset", "--no-validate", "--atol", "--force"):
        assert option in text


def test_cli_tiny_export_and_errors(tmp_path, capsys):
    from export.__main__ import main

    out = tmp_path / "m"
    assert main(["--tiny", "--output", str(out), "--components", "vae_encoder", "vae_decoder", "-q"]) == 0
    assert "model id" in capsys.readouterr().out
    assert main(["--tiny", "--output", str(out), "-q"]) == 2
    assert "--force" in capsys.readouterr().err


def test_fp16_export_keeps_the_vae_in_fp32(tmp_path, tiny_bundle, photo):
    from export import export_bundle

    from sdlite import compress, decompress, load_model

    manifest = export_bundle(tmp_path / "half", tiny=True, dtype="fp16")
    assert manifest["dtype"] == "fp16" and manifest["components"]["unet"]["dtype"] == "fp16"
    assert manifest["components"]["vae_decoder"]["dtype"] == "fp32"
    full = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["model_id"] == full["model_id"]  # same VAE: streams are interchangeable
    half = load_model(tmp_path / "half")
    assert half.session("unet").get_inputs()[0].type == "tensor(float16)"
    data = compress(photo, model=load_model(tiny_bundle))
    assert decompress(data, model=half).size == (70, 45)


def test_vae_swap_from_a_local_folder(tmp_path, tiny_bundle):
    from export import export_bundle
    from export.tiny import save_tiny_pipeline

    folder = save_tiny_pipeline(tmp_path / "pipeline")
    manifest = export_bundle(tmp_path / "swapped", model=str(folder), vae=str(folder), components=["vae_encoder", "vae_decoder"])
    assert manifest["source"]["vae"] == str(folder)
    assert manifest["model_id"] == json.loads((tiny_bundle / "manifest.json").read_text())["model_id"]  # same VAE weights
