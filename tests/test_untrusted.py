"""Untrusted input, second round (issue 19): each test failed on the code before it. Costs are asserted
as counts of work (coder calls, table passes, bytes read), never as times."""

import io
import json
import os
import shutil
import stat
import struct
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, UnidentifiedImageError

import sdlite
import sdlite.pillow
from sdlite import (BitstreamError, BundleError, SdliteError, bitstream, compress, compress_latents, decompress,
                    decompress_latents, load_model)
from sdlite.cli import OutputExists, main, write_atomic
from sdlite.methods.entropy import coder, context, params, probability
from sdlite.options import CompressOptions

from bench.fuzz import legacy_entropy_stream

from .fakes import FakeDecoder, fake_bundle, fake_sessions

MODEL_ID = "5afe5afe5afe5afe"


# --- hostile files, made deterministically ------------------------------------------------------------------
def jpeg_with_broken_exif(path: Path) -> None:
    """EXIF whose SubIFDs tag (a LONG) holds text: Pillow's EXIF rewrite raises struct.error."""
    exif = b"Exif\0\0MM\0*\0\0\0\x08\0\x02\x01\x4a\0\x02\0\0\0\x04cam\0\x01\x12\0\x03\0\0\0\x01\0\x06\0\0\0\0\0\0"
    Image.new("RGB", (32, 24), "red").save(path, "JPEG", exif=exif)


def tiff_whose_second_frame_lacks_dimensions(path: Path) -> None:
    """Counting the frames parses the second IFD, which has no ImageWidth: Pillow raises TypeError."""
    frames = [Image.new("RGB", (32, 24), colour) for colour in ("red", "blue")]
    frames[0].save(path, "TIFF", save_all=True, append_images=frames[1:])
    data = bytearray(path.read_bytes())
    endian = "<" if data[:2] == b"II" else ">"
    first = struct.unpack_from(endian + "I", data, 4)[0]
    count = struct.unpack_from(endian + "H", data, first)[0]
    second = struct.unpack_from(endian + "I", data, first + 2 + 12 * count)[0]
    for i in range(struct.unpack_from(endian + "H", data, second)[0]):
        at = second + 2 + 12 * i
        if struct.unpack_from(endian + "H", data, at)[0] == 256:
            struct.pack_into(endian + "H", data, at, 0xFFFE)
    path.write_bytes(bytes(data))


# --- 1. residual tables: one pass per stream, bounded --------------------------------------------------------
def test_residual_tables_of_a_hostile_version_3_stream_take_one_bounded_pass(monkeypatch):
    passes = []
    original = probability.magnitude_columns

    def counted(q, distances):
        passes.append(int(np.max(distances, initial=0)))
        return original(q, distances)

    monkeypatch.setattr(probability, "magnitude_columns", counted)
    data = legacy_entropy_stream(4, 2, 2, levels=2, rmin=-32768, rmax=-32767)  # 28 planes far from 0: 0.8 s each before
    assert len(data) < 100
    try:
        decompress_latents(data)
    except BitstreamError:
        pass
    assert len(passes) == 1 and passes[0] <= probability.FRACTIONS * 32769


def test_format_version_4_bounds_residuals_and_table_work():
    z = np.random.default_rng(0).normal(0, 3, (4, 16, 16)).astype(np.float32)
    data = compress_latents(z, model_id=MODEL_ID)
    header, payload = bitstream.unpack(data)
    raw = bytearray(zlib.decompress(header.params))
    at = params.GLOBAL.size + 2  # the group's range follows the 16-plane bitmap
    for bad, message in [((-5000, 0), "invalid residual range"), ((0, 4096), "invalid residual range"), ((-2, -2), "invalid residual range")]:
        params.RANGE.pack_into(raw, at, *bad)
        forged = bitstream.pack(replace(header, params=zlib.compress(bytes(raw))), payload)
        with pytest.raises(BitstreamError, match=message):
            decompress_latents(forged)


# --- 2. decoding cost follows the stream, not the sides -------------------------------------------------------
def _count_coder_calls(monkeypatch) -> list:
    calls = []
    original = coder._Reader.decode

    def counted(self, probabilities):
        calls.append(len(probabilities))
        return original(self, probabilities)

    monkeypatch.setattr(coder._Reader, "decode", counted)
    return calls


def test_a_far_from_square_image_decodes_in_few_coder_calls(monkeypatch):
    rng = np.random.default_rng(1)
    z = (rng.normal(0, 3, (4, 1, 65535)).cumsum(axis=2) / 20).astype(np.float32)  # an 8 x 524,280 image
    data = compress_latents(z, model_id=MODEL_ID, latent_space="sd1", size=(524280, 8))
    calls = _count_coder_calls(monkeypatch)
    back = decompress_latents(data)
    planes = 4 * 4
    assert len(calls) <= 3 * context.BLOCK_SIDE + planes  # was one call per wavefront and plane: 524,288
    assert back.shape == (1, 4, 1, 65535)


def test_payloads_must_hold_what_the_parameters_claim(monkeypatch):
    z = np.random.default_rng(2).normal(0, 3, (4, 24, 32)).astype(np.float32)
    data = compress_latents(z, model_id=MODEL_ID)
    header, payload = bitstream.unpack(data)
    calls = _count_coder_calls(monkeypatch)
    decompress_latents(data)
    whole = len(calls)
    for forged, message in [(b"", "symbols need over"), (payload[:4], "symbols need over"), (payload + bytes(8), "length does not match")]:
        calls.clear()
        with pytest.raises(BitstreamError, match=message):
            decompress_latents(bitstream.pack(header, forged))
        if len(forged) <= 4:
            assert len(calls) <= whole // 8  # a short payload stops the decoder as soon as its bits are spent


def test_a_version_3_stream_needing_too_many_coder_calls_is_refused(monkeypatch):
    calls = _count_coder_calls(monkeypatch)
    data = legacy_entropy_stream(4, 1, 65535, levels=1, rmin=-1, rmax=1)
    with pytest.raises(BitstreamError, match="sequential coder calls"):
        decompress_latents(data, max_pixels=None)
    assert calls == []


# --- 3. Pillow honours max_pixels and reads no more than the header justifies -------------------------------
def _claiming(width: int, height: int) -> bytes:
    latent = (-(-height // 8), -(-width // 8))
    header = bitstream.Header(2, MODEL_ID, width, height, (4, *latent), latent_space=1, params=zlib.compress(b"\0"))
    return bitstream.pack(header, b"")


class CountingReader(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.served = 0

    def read(self, size=-1):
        chunk = super().read(size)
        self.served += len(chunk)
        return chunk


def test_pillow_refuses_images_over_max_pixels_at_open():
    data = _claiming(9000, 9000)  # under Pillow's own bomb limit
    assert len(data) < 100
    with pytest.raises(UnidentifiedImageError, match="max_pixels"):
        Image.open(io.BytesIO(data))
    sdlite.pillow.set_max_pixels(None)
    try:
        with Image.open(io.BytesIO(data)) as im:
            assert im.size == (9000, 9000)
    finally:
        sdlite.pillow.set_max_pixels(sdlite.DEFAULT_MAX_PIXELS)


def test_pillow_open_reads_only_the_stream(photo):
    stream = compress_latents(np.zeros((4, 6, 9), np.float32), model_id=MODEL_ID)
    source = CountingReader(stream + bytes(64 << 20))  # a valid stream, then 64 MB
    with pytest.raises(UnidentifiedImageError, match="bytes follow"):
        Image.open(source)
    assert source.served <= len(stream) + 64  # Pillow's 16-byte prefix, the stream, one byte past it


# --- 4. one bad image never ends a batch ------------------------------------------------------------------------
def test_images_that_make_pillow_raise_odd_errors_are_invalid_images(tmp_path):
    jpeg_with_broken_exif(tmp_path / "exif.jpg")
    tiff_whose_second_frame_lacks_dimensions(tmp_path / "frames.tif")
    for name in ("exif.jpg", "frames.tif"):
        with pytest.raises(sdlite.InvalidImageError, match="cannot"):
            sdlite.images.load_rgb(tmp_path / name)


def test_a_batch_goes_on_past_bad_images(fake_model, tmp_path, photo, capsys, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    jpeg_with_broken_exif(folder / "a-exif.jpg")
    tiff_whose_second_frame_lacks_dimensions(folder / "b-frames.tif")
    Image.fromarray(photo).save(folder / "c-good.png")
    monkeypatch.setattr(sdlite.cli, "load_model", lambda *a, **k: fake_model)
    assert main(["compress", str(folder), "--out-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count(": error: ") == 2
    assert sorted(os.listdir(tmp_path / "out")) == ["c-good.sdz"]


class FailingDecoder(FakeDecoder):
    def run(self, names, feed):
        raise RuntimeError("[ONNXRuntimeError] : 6 : RUNTIME_EXCEPTION : Non-zero status code returned while running Conv node")


class WrongRankDecoder(FakeDecoder):
    def run(self, names, feed):
        return [np.zeros((1, 3, 8), np.float32)]


@pytest.mark.parametrize("decoder,message", [(FailingDecoder(), "onnxruntime failed running the vae_decoder: RuntimeError"),
                                             (WrongRankDecoder(), r"returned shape \(1, 3, 8\)")])
def test_network_failures_are_sdlite_errors(tmp_path, photo, decoder, message):
    model = load_model(fake_bundle(tmp_path / "b"), session_overrides={**fake_sessions(), "vae_decoder": decoder})
    data = compress(photo, model=model)
    with pytest.raises(SdliteError, match=message):
        decompress(data, model=model)


def test_ray_rows_keep_their_own_errors(fake_model, tmp_path, photo):
    pytest.importorskip("ray")
    from sdlite.ray import _Compressor

    jpeg_with_broken_exif(tmp_path / "bad.jpg")
    good = io.BytesIO()
    Image.fromarray(photo).save(good, "PNG")
    worker = _Compressor(fake_model, "image", "image", CompressOptions(), {})  # the actor's callable, without a cluster
    batch = {"image": np.array([(tmp_path / "bad.jpg").read_bytes(), good.getvalue()], dtype=object)}
    result = worker(batch)
    assert result["error"][0].startswith("cannot decode image") and result["error"][1] == ""
    assert result["sdz"][0] == b"" and result["sdz"][1][:4] == b"SDLZ"


# --- 5 and 6. bundles stay inside themselves; hostile manifests are bundle errors ---------------------------
def _manifest_bundle(tmp_path, **changes):
    folder = tmp_path / "bundle"
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "vae_decoder").mkdir(parents=True)
    (folder / "vae_decoder" / "model.onnx").write_bytes(b"graph")
    manifest = {"bundle_format": 1, "model_id": "0123456789abcdef", "latent_channels": 4, "downsample_factor": 8, "scaling_factor": 0.18215,
                "components": {"vae_decoder": {"file": "vae_decoder/model.onnx",
                                               "files": [{"path": "vae_decoder/model.onnx", "sha256": "0" * 64, "size": 5}]}}}
    manifest.update(changes)
    (folder / "manifest.json").write_text(json.dumps(manifest) if not isinstance(manifest, str) else manifest)
    return folder


HOSTILE_MANIFESTS = {
    "components as a list": {"components": ["vae_decoder"]},
    "components null": {"components": None},
    "a component that is a string": {"components": {"vae_decoder": "vae_decoder/model.onnx"}},
    "files not a list": {"components": {"vae_decoder": {"file": "vae_decoder/model.onnx", "files": "all"}}},
    "a files entry not an object": {"components": {"vae_decoder": {"file": "vae_decoder/model.onnx", "files": [7]}}},
    "sha256 null": {"components": {"vae_decoder": {"file": "vae_decoder/model.onnx",
                                                   "files": [{"path": "vae_decoder/model.onnx", "sha256": None, "size": 5}]}}},
    "size a string": {"components": {"vae_decoder": {"file": "vae_decoder/model.onnx",
                                                     "files": [{"path": "vae_decoder/model.onnx", "sha256": "0" * 64, "size": "5"}]}}},
    "downsample_factor 0": {"downsample_factor": 0},
    "downsample_factor 1e9": {"downsample_factor": 10**9},
    "shift_factor text": {"shift_factor": "abc"},
    "scaling_factor infinite": {"scaling_factor": 1e400},
    "latent_channels 0": {"latent_channels": 0},
    "latent_channels a float": {"latent_channels": 4.5},
    "model_id not hex": {"model_id": "zz" * 8},
    "an absolute main file": {"components": {"vae_decoder": {"file": "/etc/passwd", "files": []}}},
    "a main file up the tree": {"components": {"vae_decoder": {"file": "../../etc/passwd", "files": []}}},
    "a listed file up the tree": {"components": {"vae_decoder": {"file": "vae_decoder/model.onnx",
                                                                 "files": [{"path": "../x", "sha256": "0" * 64, "size": 1}]}}},
    "uncond up the tree": {"uncond_embedding": "../uncond.npy"},
    "scheduler absolute": {"scheduler": "/etc/hostname"},
    "latent space that contradicts the channels": {"latent_space": {"name": "sd3"}},
}


@pytest.mark.parametrize("name", list(HOSTILE_MANIFESTS))
def test_hostile_manifests_are_bundle_errors(tmp_path, name):
    folder = _manifest_bundle(tmp_path, **HOSTILE_MANIFESTS[name])
    with pytest.raises(BundleError):
        load_model(folder)


@pytest.mark.parametrize("field,value", [("latent_channels", "4"), ("latent_channels", 0), ("scaling_factor", [1]), ("shift_factor", "abc"),
                                         ("block_out_channels", "abc"), ("block_out_channels", list(range(40))), ("latent_space", 3),
                                         ("latent_space", "sd3"), ("downsample_factor", 10**9)])
def test_hostile_config_json_of_a_folder_without_manifest_is_a_bundle_error(tmp_path, field, value):
    folder = tmp_path / "optimum"
    (folder / "vae_decoder").mkdir(parents=True)
    (folder / "vae_decoder" / "model.onnx").write_bytes(b"graph")
    config = {"latent_channels": 4, "scaling_factor": 0.18215, "block_out_channels": [1, 2, 3, 4], field: value}
    (folder / "vae_decoder" / "config.json").write_text(json.dumps(config))
    with pytest.raises(BundleError):
        load_model(folder)


def test_deeply_nested_or_huge_manifests_are_bundle_errors(tmp_path):
    folder = _manifest_bundle(tmp_path)
    (folder / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(BundleError, match="RecursionError|JSON object"):
        load_model(folder)
    (folder / "manifest.json").write_bytes(b" " * (sdlite.files.MAX_JSON_BYTES + 1))
    with pytest.raises(BundleError, match="over the"):
        load_model(folder)


def test_a_symbolic_link_out_of_the_bundle_is_refused(tmp_path):
    outside = tmp_path / "secret.bin"
    outside.write_bytes(b"not yours")
    folder = _manifest_bundle(tmp_path)
    (folder / "vae_decoder" / "model.onnx").unlink()
    os.symlink(outside, folder / "vae_decoder" / "model.onnx")
    with pytest.raises(BundleError, match="leads outside the bundle"):
        load_model(folder).session("vae_decoder")


def test_a_component_without_recorded_hashes_is_refused(tmp_path):
    folder = _manifest_bundle(tmp_path, components={"vae_decoder": {"file": "vae_decoder/model.onnx", "files": []}})
    with pytest.raises(BundleError, match="records no size and sha256"):
        load_model(folder)


def _unet_bundle(tiny_bundle, tmp_path) -> Path:
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle, copy)
    for path in copy.rglob("*"):
        if path.is_file():
            path.chmod(0o644)
    return copy


def test_extras_are_hashed_and_a_huge_scheduler_claim_is_refused(tiny_bundle, tmp_path):
    copy = _unet_bundle(tiny_bundle, tmp_path)
    manifest = json.loads((copy / "manifest.json").read_text())
    assert {e["path"] for e in manifest["extra_files"]} == {"uncond.npy", "scheduler/scheduler_config.json"}
    config = copy / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps({"num_train_timesteps": 400_000_000}))
    with pytest.raises(BundleError, match="manifest records"):
        load_model(copy).scheduler
    manifest["extra_files"] = [e for e in manifest["extra_files"] if e["path"] != "scheduler/scheduler_config.json"]
    (copy / "manifest.json").write_text(json.dumps(manifest))  # a bundle made before extras were recorded
    with pytest.raises(BundleError, match="num_train_timesteps must be an integer from 1 to"):
        load_model(copy).scheduler
    np.save(copy / "uncond.npy", np.zeros((1, 77, 32), np.float32) + 1)
    with pytest.raises(BundleError, match="manifest records|sha256"):
        load_model(copy).uncond_embedding


def test_the_header_names_a_space_that_fits_its_channels():
    header = bitstream.Header(2, MODEL_ID, 64, 64, (16, 8, 8), latent_space=1, params=b"")
    with pytest.raises(BitstreamError, match="claims latent space sd1 .4 channels"):
        decompress_latents(bitstream.pack(header, b""))


# --- 8. unbounded reads ----------------------------------------------------------------------------------------
@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_devices_and_fifos_are_refused_without_reading(tmp_path, capsys):
    fifo = tmp_path / "waiting.sdz"
    os.mkfifo(fifo)
    assert main(["info", "/dev/zero", str(fifo)]) == 1
    err = capsys.readouterr().err
    assert err.count("is not a regular file") == 2 and "Traceback" not in err
    with pytest.raises(BitstreamError, match="not a regular file"):
        bitstream.read_file("/dev/zero")


def test_info_of_a_large_file_streams_it(tmp_path, monkeypatch):
    z = np.zeros((4, 6, 9), np.float32)
    stream = compress_latents(z, model_id=MODEL_ID)
    big = tmp_path / "big.sdz"
    big.write_bytes(stream + bytes(8 << 20))
    with pytest.raises(BitstreamError, match="bytes follow"):
        bitstream.read_header_file(big)
    header, payload, total = bitstream.read_header_file(_write(tmp_path / "ok.sdz", stream))
    assert total == len(stream) and payload == len(bitstream.unpack(stream)[1])
    monkeypatch.setattr(bitstream, "_READ_CHUNK", 1 << 10)
    claimed = bitstream.Header(1, MODEL_ID, 2048, 2048, (4, 256, 256), latent_space=1, params=struct.pack(">IHB", 182150, 255, 100))
    body = bitstream.pack(claimed, bytes(300_000))
    sizes = []
    with open(_write(tmp_path / "claim.sdz", body), "rb") as handle:
        source = bitstream._File(handle)
        real_read = source.handle.read
        source.handle = type("H", (), {"read": lambda self, n: sizes.append(n) or real_read(n)})()
        with pytest.raises(BitstreamError):
            bitstream._read(source, max_pixels=None, keep_payload=False)
    assert max(sizes) <= 1 << 10  # read in chunks, never whole


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- 9 and the small ones: outputs, options, names ----------------------------------------------------------
def test_outputs_follow_the_umask_and_force_keeps_the_mode(tmp_path):
    previous = os.umask(0o077)
    try:
        write_atomic(tmp_path / "new.bin", lambda f: f.write(b"x"), force=False)
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "new.bin").stat().st_mode) == 0o600
    (tmp_path / "kept.bin").write_bytes(b"old")
    (tmp_path / "kept.bin").chmod(0o600)
    write_atomic(tmp_path / "kept.bin", lambda f: f.write(b"new"), force=True)
    assert stat.S_IMODE((tmp_path / "kept.bin").stat().st_mode) == 0o600 and (tmp_path / "kept.bin").read_bytes() == b"new"


def test_force_never_replaces_a_fifo(tmp_path):
    fifo = tmp_path / "out.sdz"
    os.mkfifo(fifo)
    with pytest.raises(OutputExists, match="not a regular file"):
        write_atomic(fifo, lambda f: f.write(b"x"), force=True)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


def test_a_seed_above_the_range_is_a_usage_error_before_any_work(tmp_path, capsys):
    (tmp_path / "a.sdz").write_bytes(b"never read")
    assert main(["decompress", str(tmp_path / "a.sdz"), "--seed", str(2**64), "--model", "nowhere"]) == 2
    assert "--seed must be an integer from 0 to" in capsys.readouterr().err


def test_a_newline_in_a_file_name_stays_on_one_progress_line(fake_model, tmp_path, photo, capsys, monkeypatch):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(photo).save(folder / "two\nlines.png")
    monkeypatch.setattr(sdlite.cli, "load_model", lambda *a, **k: fake_model)
    assert main(["compress", str(folder), "--out-dir", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and "two\\nlines.png" in lines[0]


# --- 10. a failed Pillow save leaves the existing file as it was ----------------------------------------------
def test_a_failed_pillow_save_keeps_the_existing_file(fake_model, tmp_path, photo):
    sdlite.pillow.set_model(fake_model)
    try:
        target = tmp_path / "keep.sdz"
        target.write_bytes(b"precious")
        for options in ({"target_bytes": 10}, {"effort": 9}):
            with pytest.raises(OSError, match="cannot write SDZ image"):
                Image.fromarray(photo).save(target, **options)
            assert target.read_bytes() == b"precious"
        frames = [Image.fromarray(photo), Image.fromarray(photo[::-1].copy())]
        with pytest.raises(OSError, match="holds one image"):
            frames[0].save(target, save_all=True, append_images=frames[1:])
        assert target.read_bytes() == b"precious"
        Image.fromarray(photo).save(target, save_all=True)  # one frame: saved, not a KeyError
        assert target.read_bytes()[:4] == b"SDLZ"
    finally:
        sdlite.pillow.set_model(None)


def test_a_manifest_that_is_a_folder_is_refused(tmp_path, vaelight):
    """With model files beside it, the folder used to load as a manifest-less bundle."""
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(vaelight.path, bundle)
    (bundle / "manifest.json").mkdir()
    with pytest.raises(BundleError, match="is not a regular file"):
        sdlite.load_model(bundle)


def test_a_component_that_is_not_onnx_fails_on_first_use_with_an_sdlite_error(tmp_path, vaelight):
    """Its manifest updated to match, so the sizes and hashes agree: loading is lazy, and the first use of the
    component names the file (an SdliteError, not onnxruntime's own exception)."""
    import shutil

    from sdlite import manifest as manifests

    bundle = tmp_path / "bundle"
    shutil.copytree(vaelight.path, bundle)
    for path in bundle.rglob("*"):
        path.chmod(0o755 if path.is_dir() else 0o644)
    (bundle / "vae_decoder" / "model.onnx").write_bytes(b"not an onnx graph at all")
    components = {c: manifests.component_entry(bundle, c) for c in ("vae_encoder", "vae_decoder")}
    manifests.write(bundle, {"model_id": "0123456789abcdef", "components": components, "latent_space": {"name": "sd1"},
                             "scaling_factor": 0.18215, "latent_channels": 4, "downsample_factor": 8})
    model = sdlite.load_model(bundle)
    with pytest.raises(SdliteError, match="model.onnx"):
        model.decode(np.zeros((1, 4, 8, 8), np.float32))
