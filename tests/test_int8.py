"""int8 bundles (python -m export.quantize): they load, say how they were made, and round-trip with a
bounded quality loss, on the tiny bundle and on the real TAESD."""

import json
import zlib

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

    manifest = quantize_bundle(tiny_bundle, tmp_path / "int8", images=calibration, keep_edges=1)
    fp32 = json.loads((tiny_bundle / "manifest.json").read_text())
    assert manifest["quantization"]["method"] == "int8-static-qdq" and manifest["quantization"]["derived_from"] == fp32["model_id"]
    assert sorted(manifest["quantization"]["components"]) == ["unet", "vae_decoder", "vae_encoder"]
    assert manifest["quantization"]["calibration_files"] == ["c0.png", "c1.png", "c2.png"]
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


def test_measured_choice_keeps_float_what_misses_the_budget(tiny_bundle, calibration, tmp_path, monkeypatch):
    """The default rule measures the VAE networks: a generous budget makes them int8 but their edges; a
    network whose every int8 copy costs too much (a fake measurement: random networks' errors against
    photos say nothing) stays fp32, recorded, and the bundle still decodes; none int8 at all is an error."""
    from export import ExportError
    from export import quantize as quantize_module
    from export.quantize import quantize_bundle

    loose = quantize_bundle(tiny_bundle, tmp_path / "loose", images=calibration, components=["vae_decoder"], budget=1e9)
    record = loose["quantization"]["float"]["vae_decoder"]
    # the first try (all int8 but the first and last convolution) is within budget: nothing else measured
    assert record["rule"] == "sensitivity" and record["within_budget"] and record["measured_nodes"] == 0
    assert loose["components"]["vae_decoder"]["dtype"] == "int8"
    assert _float_products(tmp_path / "loose" / loose["components"]["vae_decoder"]["file"]) == record["float_nodes"]
    assert len(record["float_nodes"]) == 2

    monkeypatch.setattr(quantize_module, "_judge", lambda *args: (1.0, lambda path: 1.0))  # every copy adds 100 %
    strict = quantize_bundle(tiny_bundle, tmp_path / "strict", images=calibration, components=["vae_decoder", "unet"])
    record = strict["quantization"]["float"]["vae_decoder"]
    assert record["kept_fp32"] and not record["within_budget"] and record["mixed_added_mse"] == 1.0
    assert record["measured_nodes"] > 0  # the edges missed: every other node was measured
    assert {c: e["dtype"] for c, e in strict["components"].items()} == {"unet": "int8", "vae_decoder": "fp32", "vae_encoder": "fp32"}
    assert strict["quantization"]["components"] == ["unet"]
    fp32_file = json.loads((tiny_bundle / "manifest.json").read_text())["components"]["vae_decoder"]["file"]
    assert (tmp_path / "strict" / strict["components"]["vae_decoder"]["file"]).read_bytes() == (tiny_bundle / fp32_file).read_bytes()
    model = sdlite.load_model(tmp_path / "strict")  # the manifest checks out (sizes, hashes)
    assert model.decode(np.zeros((1, model.latent_channels, 4, 4), np.float32), tile=None).shape[1] == 3
    with pytest.raises(ExportError, match="int8 cannot keep the quality of any of vae_decoder"):
        quantize_bundle(tiny_bundle, tmp_path / "none", images=calibration, components=["vae_decoder"])
    assert not (tmp_path / "none").exists()


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


def test_calibration_skips_what_does_not_decode(tmp_path, caplog):
    """A truncated file and a header claiming 100,000 x 100,000 pixels among the photos are skipped, said
    and left out of the record; a folder of nothing else is an error."""
    from export import ExportError
    from export.quantize import _calibration_images

    (tmp_path / "sub").mkdir()
    Image.fromarray(np.full((64, 96, 3), 120, np.uint8)).save(tmp_path / "good.png")
    good = (tmp_path / "good.png").read_bytes()
    (tmp_path / "sub" / "truncated.png").write_bytes(good[:60])
    header = (100000).to_bytes(4, "big") * 2 + good[24:29]  # the IHDR chunk's data, claiming 100000 x 100000, its CRC valid
    (tmp_path / "sub" / "huge.png").write_bytes(good[:16] + header + zlib.crc32(b"IHDR" + header).to_bytes(4, "big") + good[33:])
    crops, files = _calibration_images(tmp_path, 16)
    assert files == ["good.png"] and len(crops) == 1
    assert "truncated.png skipped" in caplog.text and "huge.png skipped" in caplog.text and "10000000000" in caplog.text
    (tmp_path / "good.png").unlink()
    with pytest.raises(ExportError, match="none of the 2 calibration images"):
        _calibration_images(tmp_path, 16)


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
