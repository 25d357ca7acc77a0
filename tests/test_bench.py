"""Benchmark harness: metrics, LPIPS, peer fitting, and smoke runs on the tiny bundle."""

import json
import os
import pickle
import re

import numpy as np
import pytest
from PIL import Image

from bench import lpips as lp
from bench import metrics, peers

from .conftest import EXPORT_STACK


@pytest.fixture(scope="module")
def lpips_weights():
    path = lp.default_weights_path()
    if not path.is_file():
        pytest.skip(f"LPIPS weights absent at {path}: run `python -m bench fetch-lpips` (.ci/run does)")
    return lp.load_weights(path)


def _pair(seed=0, shape=(64, 96, 3), noise=20):
    rng = np.random.default_rng(seed)
    base = (np.add.outer(np.arange(shape[0]), np.arange(shape[1]))[..., None] * [1, 2, 3] % 256).astype(np.uint8)
    noisy = np.clip(base + rng.normal(0, noise, shape), 0, 255).astype(np.uint8)
    return base, noisy


def test_psnr_and_ssim_basics():
    a, b = _pair()
    assert metrics.psnr(a, a) == float("inf") and metrics.ssim(a, a) == pytest.approx(1.0)
    assert 15 < metrics.psnr(a, b) < 30 and 0 < metrics.ssim(a, b) < 1
    assert metrics.ssim(a, _pair(noise=5)[1]) > metrics.ssim(a, b)
    big_a, big_b = _pair(shape=(200, 200, 3))
    assert 0 < metrics.ms_ssim(big_a, big_b) < 1 and metrics.ms_ssim(big_a, big_a) == pytest.approx(1.0)
    assert np.isnan(metrics.ms_ssim(a, b))  # too small for five scales


def test_restricted_unpickler_refuses_code(tmp_path):
    evil = tmp_path / "evil.ckpt"
    evil.write_bytes(pickle.dumps({"x": print}))
    with pytest.raises(pickle.UnpicklingError, match="only numpy arrays"):
        lp.load_weights(evil)


def test_lpips_sanity(lpips_weights):
    model = lp.LPIPS(lpips_weights)
    a, b = _pair()
    assert model(a, a) == pytest.approx(0.0, abs=1e-7)
    near, far = model(a, _pair(noise=5)[1]), model(a, b)
    assert 0 < near < far


@pytest.mark.skipif(not EXPORT_STACK, reason="torch not installed: no independent implementation to compare with")
def test_lpips_matches_an_independent_torch_implementation(lpips_weights):
    """The published ex_ref/ex_p0 pair is not reachable here, so the numpy network is checked against
    torch's conv2d/max_pool2d with the same weights (catches layout, padding and pooling mistakes)."""
    import torch
    import torch.nn.functional as F

    a, b = _pair(1, (80, 120, 3), 30)
    net = lpips_weights["AlexNet_0"]

    def feats(img):
        x = torch.from_numpy(img.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
        scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
        x = (x - shift) / scale
        out = []
        for i, (stride, pad) in enumerate([(4, 2), (1, 2), (1, 1), (1, 1), (1, 1)]):
            w = torch.from_numpy(net[f"Conv_{i}"]["kernel"]).permute(3, 2, 0, 1)
            x = F.relu(F.conv2d(x, w, torch.from_numpy(net[f"Conv_{i}"]["bias"]), stride=stride, padding=pad))
            out.append(x)
            if i in (0, 1):
                x = F.max_pool2d(x, 3, 2)
        return out

    assert lp.LPIPS(lpips_weights)(a, b) == pytest.approx(_torch_lpips(feats(a), feats(b), lpips_weights), rel=1e-4)


@pytest.fixture(scope="module")
def vgg_weights(lpips_weights):
    path = lp.default_weights_path("vgg16")
    if not path.is_file():
        pytest.skip(f"LPIPS-vgg weights absent at {path}: run `python -m bench fetch-lpips` (.ci/run does)")
    return lp.load_weights(path, "vgg16")


def test_lpips_engines_agree(lpips_weights, vgg_weights):
    a, b = _pair(2, (72, 104, 3), 25)
    for net, weights in (("alexnet", lpips_weights), ("vgg16", vgg_weights)):
        fast, reference = lp.LPIPS(weights, net, engine="onnxruntime"), lp.LPIPS(weights, net, engine="numpy")
        assert fast(a, b) == pytest.approx(reference(a, b), rel=1e-4), net
        assert fast(a, a) == pytest.approx(0.0, abs=1e-7)
        assert 0 < fast(a, _pair(2, (72, 104, 3), 5)[1]) < fast(a, b)


@pytest.mark.skipif(not EXPORT_STACK, reason="torch not installed: no independent implementation to compare with")
def test_lpips_vgg_matches_an_independent_torch_implementation(vgg_weights):
    """As for AlexNet: VGG16's relu1_2 .. relu5_3 taps with torch's conv2d/max_pool2d and the same weights."""
    import torch
    import torch.nn.functional as F

    a, b = _pair(3, (64, 96, 3), 30)
    net = vgg_weights["VGG16_0"]
    plan = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]

    def feats(img):
        x = torch.from_numpy(img.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        x = (x - torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)) / torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)
        out, conv = [], 0
        for i, layer in enumerate(plan):
            if layer == "M":
                x = F.max_pool2d(x, 2, 2)
                continue
            weight = torch.from_numpy(net[f"Conv_{conv}"]["kernel"]).permute(3, 2, 0, 1)
            x = F.relu(F.conv2d(x, weight, torch.from_numpy(net[f"Conv_{conv}"]["bias"]), padding=1))
            conv += 1
            if i in (1, 4, 8, 12, 16):
                out.append(x)
        return out

    assert lp.LPIPS(vgg_weights, "vgg16")(a, b) == pytest.approx(_torch_lpips(feats(a), feats(b), vgg_weights), rel=1e-4)


def test_peers_fit_the_budget():
    image = Image.fromarray(_pair(shape=(128, 160, 3))[1])
    for peer in peers.available_peers():
        small = peers.smallest(peer, image)
        fitted = peer.fit(image, small + 2000)
        assert fitted is not None and len(fitted[0]) <= small + 2000
        assert peer.fit(image, small - 1) is None
        assert peer.decode(fitted[0]).shape == (128, 160, 3)


@pytest.mark.skipif(not EXPORT_STACK, reason="export extra not installed: no tiny bundle")
def test_quality_harness_smoke(tiny_bundle, tmp_path, photo):
    from bench import quality

    path = tmp_path / "im.png"
    Image.fromarray(np.tile(photo, (4, 4, 1))).save(path)  # 180x280
    out = tmp_path / "out"
    rows = quality.run([path], model=tiny_bundle, out_dir=out, sweep_bpp=[0.5], palette_fractions=[0.65], efforts=(1, 2), progress=False)
    codecs = {r["codec"] for r in rows}
    fraction_row = next(r for r in rows if r["codec"] == quality.ENTROPY and r["setting"] == "0.65x-palette-size")
    palette_row = next(r for r in rows if r["codec"] == quality.PALETTE)
    assert fraction_row["budget"] == int(0.65 * palette_row["bytes"]) and fraction_row["bytes"] <= fraction_row["budget"]
    default_row = next(r for r in rows if r["codec"] == quality.ENTROPY and r["setting"] == quality.DEFAULT_ENTROPY_SETTING)
    assert default_row["bytes"] > 0 and default_row["psnr"] > 0
    assert {quality.CEILING, quality.PALETTE, quality.ENTROPY, quality.entropy_codec(2), "JPEG", "WebP"} <= codecs
    assert {"vaepack 5-bit", "vaepack 6-bit", "vaepack 8-bit"} <= codecs
    effort_row = next(r for r in rows if r["codec"] == quality.entropy_codec(2) and r["setting"] == "palette-size")
    assert effort_row["bytes"] <= effort_row["budget"]
    for name in ("results.json", "summary.md", "summary.json", "rd.png", "index.html", "crops/im/original.png"):
        assert (out / name).is_file(), name
    page = (out / "index.html").read_text()
    referenced = re.findall(r"src='([^']+)'", page)
    assert len(referenced) >= 6 and all((out / src).is_file() for src in referenced)  # every image the page shows exists
    assert "sdlite entropy effort 2" in page and "JPEG" in page
    # resumable: a second run reuses the cache and gives the same rows
    again = quality.run([path], model=tiny_bundle, out_dir=out, sweep_bpp=[0.5], palette_fractions=[0.65], efforts=(1, 2), crops=False, progress=False)
    assert {r["key"]: r["bytes"] for r in again} == {r["key"]: r["bytes"] for r in rows}


def test_vaepack_peer_round_trips_its_quantization():
    from bench import quality

    latents = np.random.default_rng(0).normal(0, 6, (4, 10, 14)).astype(np.float32)
    for bits in (5, 6, 8):
        back = quality.vaepack_decode(quality.vaepack_encode(latents, 0.18215, bits), 0.18215, bits)
        step = 8.0 / (2**bits - 1) / 0.18215
        inside = np.abs(latents * 0.18215) < 4  # clipped values are the approach's loss, not the container's
        assert back.shape == latents.shape and np.abs(back - latents)[inside].max() <= step / 2 + 1e-4


def test_tiling_benchmark_smoke(fake_model, tmp_path, photo):
    from bench import tiling

    path = tmp_path / "im.png"
    Image.fromarray(np.tile(photo, (6, 4, 1))).save(path)  # 270x280: 34x35 latent cells
    report = tiling.run([path], model=fake_model, tiles=[32], out_dir=tmp_path / "t")
    rows = json.loads((tmp_path / "t" / "tiling.json").read_text())["rows"]
    assert [r["tile"] for r in rows] == [None, 32] and [r["tiles_per_image"] for r in rows] == [1, 4]
    assert abs(rows[1]["psnr"] - rows[0]["psnr"]) < 0.01  # the fake VAE is local: tiles change nothing
    assert "| whole (no tiling) |" in report


@pytest.mark.skipif(not EXPORT_STACK, reason="export extra not installed: no torch reference")
def test_speed_harness_smoke(tiny_bundle, tmp_path):
    from export.tiny import save_tiny_pipeline

    from bench.__main__ import main

    from export.quantize import quantize_bundle

    pipeline = save_tiny_pipeline(tmp_path / "pipeline")  # same seed as the tiny bundle: same weights
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(calibration / "c.png")
    int8 = tmp_path / "tiny-int8"
    quantize_bundle(tiny_bundle, int8, images=calibration, components=["vae_decoder"])
    assert main(["speed", "--bundle", str(tiny_bundle), "--pipeline", str(pipeline), "--size", "64", "--also", str(int8),
                 "--stages", "unet", "decode", "--out", str(tmp_path / "s")]) == 0
    report = json.loads((tmp_path / "s" / "speed.json").read_text())
    assert [(r["stage"], r["engine"], r.get("bundle")) for r in report["stages"]] == [
        (stage, engine, bundle) for stage in ("unet", "decode")
        for engine, bundle in (("onnxruntime", str(tiny_bundle)), ("onnxruntime", str(int8)), ("torch", None))]
    assert all(r["peak_rss_mb"] > 0 and r["run_s"] for r in report["stages"])
    from bench.engine import peak_rss_mb

    # each stage's peak is its own process's, not this (bigger) parent's at fork time
    assert all(r["peak_rss_mb"] < peak_rss_mb() for r in report["stages"] if r["engine"] == "onnxruntime")
    assert all(r["flops"] > 0 for r in report["stages"] if r["engine"] == "torch")
    assert report["sgemm_gflops"] > 0 and report["int8_gemm_gops"] > 0
    table = (tmp_path / "s" / "speed.md").read_text()
    assert "| decode | onnxruntime, tiny-int8 (int8-static-qdq) |" in table and "| decode | torch fp32 |" in table
    assert table.count("%") >= 6  # every row has its share of the GEMM rate


def test_lpips_reproduces_the_published_vaelight_figures(lpips_weights, vaelight, kodak):
    """VAElight's README publishes the unquantized round trip on kodim01-12: 24.3 dB PSNR and
    LPIPS-alex 0.41. These known pairs must come out the same through our metrics."""
    from sdlite.images import load_rgb, pad_to_multiple, to_image, to_tensor

    model = lp.LPIPS(lpips_weights)
    psnrs, distances = [], []
    for number in range(1, 13):
        rgb = load_rgb(kodak / f"kodim{number:02d}.png")
        decoded = np.asarray(to_image(vaelight.decode(vaelight.encode(to_tensor(pad_to_multiple(rgb, 8)))), rgb.shape[1], rgb.shape[0]))
        psnrs.append(metrics.psnr(rgb, decoded))
        distances.append(model(rgb, decoded))
    assert np.mean(psnrs) == pytest.approx(24.3, abs=0.05)
    assert np.mean(distances) == pytest.approx(0.41, abs=0.005)


def test_device_wheel_parts_join_and_are_checked(tmp_path):
    import hashlib

    from bench import device

    data = bytes(range(256)) * 1000
    parts, wheels = tmp_path / "parts", tmp_path / "py"
    parts.mkdir()
    wheels.mkdir()
    name = "onnxruntime_gpu-1.0-cp312-cp312-manylinux_2_28_x86_64.whl"
    for i in range(3):
        (parts / f"{name}.part{i + 1:02d}").write_bytes(data[i * 100_000 : (i + 1) * 100_000])
    (wheels / f"{name}.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  3\n")
    joined = device.join_wheel(parts, wheels)
    assert joined.read_bytes() == data and joined.parent == parts
    (parts / f"{name}.part02").write_bytes(b"tampered")
    with pytest.raises(SystemExit, match="sha256 mismatch"):
        device.join_wheel(parts, wheels)
    (parts / f"{name}.part03").unlink()
    with pytest.raises(SystemExit, match="expected 3 parts"):
        device.join_wheel(parts, wheels)


def test_fuzzing_finds_nothing_outside_sdlite_errors():
    """A short run of the fuzzing benchmark (`python -m bench fuzz`); the published run has 100,000 cases."""
    from bench import fuzz

    result = fuzz.run(350, seed=7)
    assert result["findings"] == []
    assert set(result["families"]) == set(fuzz.FAMILIES)  # every family of hostile input ran
    assert result["outcomes"].get("BitstreamError", 0) > 0 and result["outcomes"].get("BundleError", 0) > 0
    assert result["outcomes"].get("accepted", 0) > 0  # valid inputs among them still work
    assert sum(result["outcomes"].values()) == 350


def test_pipeline_benchmark_smoke(vaelight, tmp_path, photo):
    from bench import pipeline

    Image.fromarray(photo).save(tmp_path / "a.png")
    text = pipeline.run([tmp_path / "a.png"], models=[vaelight.path, vaelight.path], repeats=1, out_dir=tmp_path / "out")
    rows = json.loads((tmp_path / "out" / "pipeline.json").read_text())["rows"]
    assert len(rows) == 2 and all(r["compress_s"] > 0 and r["decompress_s"] > 0 for r in rows)
    # the time outside the network runs is measured inside the same calls: positive, and less than the call
    assert all(0 < r["compress_outside_s"] < r["compress_s"] and 0 < r["decompress_outside_s"] < r["decompress_s"] for r in rows)
    assert all(r["glue_share"] > 0 for r in rows)
    assert "| vaelight |" in text and (tmp_path / "out" / "pipeline.md").is_file()


def _torch_lpips(features_a, features_b, weights) -> float:
    """LPIPS from two lists of torch feature maps: unit-normalised channels, squared differences weighted
    by the linear layers, spatial mean, summed over the taps."""
    import torch

    total = 0.0
    for i, (fa, fb) in enumerate(zip(features_a, features_b)):
        fa = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        fb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        w = torch.from_numpy(weights[f"NetLinLayer_{i}"]["Conv_0"]["kernel"].reshape(-1))
        total += float(((fa - fb) ** 2 * w.view(1, -1, 1, 1)).sum(1).mean())
    return total


def test_quality_references_are_exif_rotated_as_compress_sees_them(tiny_bundle, tmp_path, photo):
    from bench import quality

    path = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees when shown
    Image.fromarray(np.tile(photo, (2, 2, 1))).save(path, exif=exif, quality=95)  # stored 140x90, shown 90x140
    out = tmp_path / "out"
    rows = quality.run([path], model=tiny_bundle, out_dir=out, sweep_bpp=[0.5], palette_fractions=[], efforts=(1,), with_peers=False,
                       progress=False)
    assert rows and all(r["psnr"] > 0 for r in rows if "psnr" in r)  # before: the unrotated reference did not match
    import sdlite

    assert Image.open(path).size == (140, 90)
    assert sdlite.decompress(sdlite.compress(path, model=tiny_bundle, quality=50), model=tiny_bundle).size == (90, 140)


def test_cpu_engines_benchmark_smoke(vaelight, tmp_path, photo):
    """Rows compare with their onnxruntime twin: the same bundle given as an 'int8' one is pixel-identical."""
    from bench import cpu

    Image.fromarray(photo).save(tmp_path / "a.png")
    for stage in ("decoder", "roundtrip"):
        rows = cpu.run([tmp_path / "a.png"], model=vaelight.path, int8=[vaelight.path], openvino=False, stage=stage, threads=1,
                       repeats=1, out_dir=tmp_path / "out")
        assert [r["label"] for r in rows] == ["onnxruntime CPU fp32", "onnxruntime CPU int8 (vaelight)"]
        assert all(r["seconds"] > 0 and r["mad_levels"] == 0 and r["max_levels"] == 0 for r in rows)
        assert rows[0]["speed"] == 1.0 and rows[0]["psnr"] == rows[1]["psnr"] > 10
        assert json.loads((tmp_path / "out" / f"cpu-{stage}.json").read_text())["stage"] == stage
    assert "| onnxruntime CPU fp32 |" in (tmp_path / "out" / "cpu-roundtrip.md").read_text()
    with pytest.raises(ValueError, match="choose one of: roundtrip, decoder"):
        cpu.run([tmp_path / "a.png"], model=vaelight.path, stage="encoder")


def test_profile_and_batch_benchmarks_smoke(vaelight, tmp_path, photo):
    from bench import batch, profiling

    Image.fromarray(photo).save(tmp_path / "a.png")
    Image.fromarray(photo[::-1]).save(tmp_path / "b.png")
    rows = profiling.run([tmp_path / "a.png"], models=[vaelight.path], threads=1, out_dir=tmp_path / "out")
    assert [r["operation"] for r in rows] == ["compress", "decompress"]
    for r in rows:  # the parts are measured inside the call: each positive, together at most its wall time
        assert r["parts"]["networks"] > 0 and r["parts"]["image I/O"] > 0 and r["parts"]["codec maths"] > 0
        assert -0.01 * r["seconds"] < r["parts"]["Python and the rest"] < r["seconds"]
    ways = batch.run([tmp_path / "a.png", tmp_path / "b.png"], model=vaelight.path, rounds=1, cores=2, out_dir=tmp_path / "out")
    assert [w["jobs"] for w in ways] == [1, 2] and all(w["images_per_second"] > 0 and w["bytes"] > 0 for w in ways)
    assert "images/s" in (tmp_path / "out" / "batch.md").read_text()


def test_quality_default_decoder_rows_are_the_default_rules_pictures(taesd, kodak, tmp_path, monkeypatch):
    """--decoder default: sdlite rows are decode(data) with no model, as a user with the bundle gets them (a trained
    band at 0.1 bpp), measured apart from the own decoder's rows; the round trip stays the bundle's own."""
    import sdlite
    from bench import metrics as bench_metrics
    from bench import quality

    path = tmp_path / "crop.png"
    Image.open(kodak / "kodim05.png").crop((256, 128, 512, 384)).save(path)
    monkeypatch.setenv("SDLITE_MODELS_DIR", str(tmp_path / "no-models"))  # the stream's own decoder is only where run() puts it
    out = tmp_path / "out"
    kwargs = dict(model=taesd.path, out_dir=out, sweep_bpp=[0.1], palette_fractions=[], efforts=(1,), with_peers=False, crops=False,
                  progress=False)
    own = {(r["codec"], r["setting"]): r for r in quality.run([path], **kwargs)}
    default = {(r["codec"], r["setting"]): r for r in quality.run([path], decoder="default", **kwargs)}
    assert os.environ["SDLITE_MODELS_DIR"] == str(tmp_path / "no-models")  # restored
    key = (quality.ENTROPY, "0.1bpp")
    assert default[key]["bytes"] == own[key]["bytes"] and default[key]["psnr"] != own[key]["psnr"]
    assert default[key]["fingerprint"] != own[key]["fingerprint"]
    assert default[(quality.CEILING, "-")]["psnr"] == own[(quality.CEILING, "-")]["psnr"]
    data = sdlite.compress(path, model=taesd, target_bytes=default[key]["budget"])
    assert len(data) == default[key]["bytes"]
    trained = np.asarray(sdlite.decompress(data, model="taesd-codec"))
    assert default[key]["psnr"] == pytest.approx(bench_metrics.psnr(np.asarray(Image.open(path)), trained))
    with pytest.raises(ValueError, match="choose one of own, default"):
        quality.run([path], decoder="trained", **kwargs)


class _LinearDecoder:
    """A fake sd1 model whose picture is sum_k gain_k * latent_k in every pixel of its 8x8 cell: noise of
    variance s^2 in component k adds gain_k^2 * s^2 of pixel MSE, so the sensitivities are the gains squared."""

    latent_space = None
    downsample_factor = 8

    def __init__(self, gains):
        from sdlite import latent_space

        self.latent_space = latent_space.by_name("sd1")
        self.gains = np.asarray(gains, dtype=np.float64)
        self.path = "linear"

    def encode(self, pixels, tile=None):
        cells = pixels[:, :, ::8, ::8].mean(axis=1, keepdims=True)
        return np.concatenate([cells * (k + 1) for k in range(len(self.gains))], axis=1).astype(np.float32)

    def decode(self, latents, tile=None):
        mixed = np.einsum("k,bkhw->bhw", self.gains, latents.astype(np.float64))[:, None]
        return np.repeat(np.repeat(np.repeat(mixed, 3, axis=1), 8, axis=2), 8, axis=3)


def test_component_weights_are_the_root_sensitivities_over_their_geometric_mean(tmp_path, monkeypatch):
    from bench import latent_stats
    from sdlite import latent_space

    rng = np.random.default_rng(0)
    for i in range(2):  # a large photo (scaled and cropped) and a small one (cropped only)
        size = (900, 700) if i == 0 else (300, 280)
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(tmp_path / f"{i}.png")
    monkeypatch.setattr(latent_stats, "load_model", lambda model: model)
    gains = [1.0, 2.0, 0.5, 4.0]
    result = latent_stats.component_weights(sorted(tmp_path.glob("*.png")), _LinearDecoder(gains), crop=128, draws=4)
    np.testing.assert_allclose(result["sensitivity"], np.square(gains), rtol=0.12)  # noise draws: about (3 % spread), not exactly
    roots = np.sqrt(np.asarray(result["sensitivity"]))
    want = np.rint(roots / np.exp(np.mean(np.log(roots))) * latent_space.COMPONENT_WEIGHT_ONE)
    assert np.abs(np.asarray(result["weights"]) - want).max() <= 1 and result["images"] == 2  # from 4-digit sensitivities
    assert result["spread"] == pytest.approx(max(result["sensitivity"]) / min(result["sensitivity"]), rel=1e-3)
    assert "max_difference_from_committed_weights" not in result  # sd1 has none committed
