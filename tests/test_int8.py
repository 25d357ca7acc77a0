"""int8 bundles (python -m export.quantize): they load, say how they were made, and round-trip with a
bounded quality loss, on the tiny bundle and on the real TAESD."""

import json

import numpy as np
import pytest
from PIL import Image

import sdlite
from sdlite import images

from .conftest import EXPORT_STACK, SHARED

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not EXPORT_STACK, reason="export extra not installed (pip install -e .[export])")]


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibration")
    rng = np.random.default_rng(0)
    for i in range(3):
        y, x = np.mgrid[0:96, 0:128]
        picture = np.stack([(x * (i + 2)) % 256, (y * 3 + 40 * i) % 256, ((x + y) * 2) % 256], axis=2) + rng.normal(0, 8, (96, 128, 3))
        Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(folder / f"c{i}.png")
    return folder


def _psnr(a, b):
    return float(10 * np.log10(255.0**2 / np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def test_tiny_bundle_quantized_whole(tiny_bundle, calibration, tmp_path, photo):
    from export.quantize import quantize_bundle

    manifest = quantize_bundle(tiny_bundle, tmp_path / "int8", images=calibration)
    fp32 = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["quantization"]["method"] == "int8-static-qdq" and manifest["quantization"]["derived_from"] == fp32["model_id"]
    assert sorted(manifest["quantization"]["components"]) == ["unet", "vae_decoder", "vae_encoder"]
    assert all(entry["dtype"] == "int8" for entry in manifest["components"].values())
    model = sdlite.load_model(tmp_path / "int8")
    assert model.info.quantization["method"] == "int8-static-qdq" and model.model_id != fp32["model_id"]
    assert model.session("unet").get_inputs()[0].type == "tensor(float)"  # int8 inside, float at the edges
    data = sdlite.compress(photo, model=model)
    assert sdlite.decompress(data, model=model).size == (70, 45)  # U-Net denoising included
    from sdlite.cli import bundle_summary

    summary = bundle_summary(tmp_path / "int8")
    assert summary["quantization"]["method"] == "int8-static-qdq" and summary["components"]["unet"] == "int8"


def test_quantizing_in_steps_keeps_the_record(tiny_bundle, calibration, tmp_path):
    from export.quantize import quantize_bundle

    fp32 = json.loads((tiny_bundle / "manifest.json").read_text())
    quantize_bundle(tiny_bundle, tmp_path / "unet8", images=calibration, components=["unet"])
    manifest = quantize_bundle(tmp_path / "unet8", tmp_path / "all8", images=calibration, components=["vae_decoder"])
    assert manifest["quantization"]["components"] == ["unet", "vae_decoder"]
    assert manifest["quantization"]["derived_from"] == fp32["model_id"]
    assert {name: entry["dtype"] for name, entry in manifest["components"].items()} == {"unet": "int8", "vae_decoder": "int8", "vae_encoder": "fp32"}


def _float_products(path):
    """Conv / MatMul / Gemm nodes of a graph that run float: not both input and weight dequantized int8."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    dequantized = {out for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output}
    return [n.name for n in graph.node if n.op_type in ("Conv", "MatMul", "Gemm") and not {n.input[0], n.input[1]} <= dequantized]


def test_optimised_unet_quantizes_past_its_fused_attention(tiny_bundle, calibration, tmp_path):
    """onnx cannot type the outputs of com.microsoft ops; without the typing pass everything downstream of
    the first fused attention stayed float."""
    import shutil

    from export.optimize import optimize_bundle
    from export.quantize import quantize_bundle

    shutil.copytree(tiny_bundle, tmp_path / "opt")
    assert optimize_bundle(tmp_path / "opt", components=["unet"])["optimization"]["components"]["unet"]["fused"]["MultiHeadAttention"]
    for keep_edges, floats in ((0, 0), (1, 2)):  # default: the first and last convolution stay float
        manifest = quantize_bundle(tmp_path / "opt", tmp_path / f"int8-{keep_edges}", images=calibration, components=["unet"],
                                   keep_edges=keep_edges)
        assert len(_float_products(tmp_path / f"int8-{keep_edges}" / manifest["components"]["unet"]["file"])) == floats


def test_int8_taesd_loses_little(calibration, kodak, tmp_path):
    taesd = SHARED / "models" / "taesd"
    if not (taesd / "vae_decoder" / "model.onnx").is_file():
        pytest.skip(f"real-weights model absent: {taesd}")
    from export.quantize import quantize_bundle

    quantize_bundle(taesd, tmp_path / "taesd-int8", images=kodak, max_images=4)
    fp32, int8 = sdlite.load_model(taesd), sdlite.load_model(tmp_path / "taesd-int8")
    rgb = images.load_rgb(kodak / "kodim07.png")
    tensor = images.to_tensor(rgb)
    reference = _psnr(rgb, images.to_image(fp32.decode(fp32.encode(tensor)), 768, 512))
    quantized = _psnr(rgb, images.to_image(int8.decode(int8.encode(tensor)), 768, 512))
    assert quantized > reference - 0.5, (reference, quantized)  # kodim01-12 mean: BENCHMARKS.md
    data = sdlite.compress(rgb, model=fp32)  # an fp32 stream reads with the int8 decoder of the same space
    with pytest.warns(RuntimeWarning, match="another decoder"):
        assert sdlite.decompress(data, model=int8, decoder_mismatch="allow").size == (768, 512)


def test_quantize_errors_name_the_problem(tiny_bundle, tmp_path):
    from export import ExportError
    from export.quantize import main, quantize_bundle

    with pytest.raises(ExportError, match="no calibration images"):
        quantize_bundle(tiny_bundle, tmp_path / "x", images=tmp_path)
    with pytest.raises(ExportError, match="already exists"):
        quantize_bundle(tiny_bundle, tiny_bundle, images=tmp_path)
    with pytest.raises(ExportError, match="unknown calibration 'kl'; choose one of: minmax, percentile, entropy"):
        quantize_bundle(tiny_bundle, tmp_path / "x", images=tmp_path, calibration="kl")
    assert main([str(tiny_bundle), "--images", str(tmp_path / "none"), "--output", str(tmp_path / "y")]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
