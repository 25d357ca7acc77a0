"""Hostile and unlucky inputs (issue 12): each repro failed on the code before it; each now gives a clear
SdliteError or the right result."""

import json
import os
import shutil
import struct
import threading
import warnings
import zlib

import numpy as np
import pytest
from PIL import Image

import sdlite
from sdlite import (
    BitstreamError,
    BundleError,
    InvalidImageError,
    ModelMismatchError,
    OptionError,
    ProviderError,
    compress,
    compress_latents,
    decompress,
    decompress_latents,
    info,
    load_model,
    sessions,
)
from sdlite.cli import OutputExists, main, write_atomic

from .fakes import fake_bundle, fake_sessions


def _png_header_only(path, width, height):
    """A PNG whose IHDR claims width x height (and no pixel data to speak of)."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


# --- crafted streams ----------------------------------------------------------------------------------
def test_a_stream_with_another_downsample_factor_is_refused(fake_model):
    header = sdlite.bitstream.Header(2, fake_model.model_id, 2040, 1530, (4, 6, 8), 255, b"")
    with pytest.raises(BitstreamError, match="downsample factor 255 is outside 1..64"):
        decompress(sdlite.bitstream.pack(header, b""), model=fake_model)
    data = compress_latents(np.zeros((4, 6, 8), np.float32), model_id=fake_model.model_id, size=(128, 96), downsample_factor=16)
    assert info(data)["downsample_factor"] == 16
    with pytest.raises(ModelMismatchError, match="downsample factor 16.* has 8"):
        decompress(data, model=fake_model)


def test_a_factor_1_stream_cannot_make_the_decoder_run_at_8x(fake_model):
    data = compress_latents(np.zeros((4, 256, 256), np.float32), model_id=fake_model.model_id, size=(256, 256), downsample_factor=1)
    with pytest.raises(ModelMismatchError, match="downsample factor 1"):
        decompress(data, model=fake_model)


def test_a_huge_palette_stream_is_refused_before_allocation():
    header = sdlite.bitstream.Header(1, "0" * 16, 2048, 2048, (255, 2048, 2048), 1, struct.pack(">IHB", 182150, 255, 100))
    data = sdlite.bitstream.pack(header, zlib.compress(b"\0" * 4096))
    with pytest.raises(BitstreamError, match="latent channel count 255"):
        decompress_latents(data)
    header = sdlite.bitstream.Header(1, "0" * 16, 2048, 2048, (64, 2048, 2048), 1, struct.pack(">IHB", 182150, 255, 100))
    with pytest.raises(BitstreamError, match="larger than max_pixels"):
        decompress_latents(sdlite.bitstream.pack(header, zlib.compress(b"\0" * 4096)))
    assert info(sdlite.bitstream.pack(header, b""))["latent_shape"] == [64, 2048, 2048]  # info allocates nothing


def test_method_parameters_longer_than_the_shape_needs_are_refused():
    header = sdlite.bitstream.Header(2, "0" * 16, 16, 16, (4, 2, 2), 8, b"\0" * 5000)
    with pytest.raises(BitstreamError, match="parameters of 5000 bytes exceed"):
        decompress_latents(sdlite.bitstream.pack(header, b""))


# --- hostile files --------------------------------------------------------------------------------------
def test_a_decompression_bomb_is_an_invalid_image_and_the_batch_goes_on(tmp_path, vaelight, photo, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _png_header_only(folder / "bomb.png", 100000, 100000)
    Image.fromarray(photo).save(folder / "ok.png")
    with pytest.raises(InvalidImageError, match="decompression bomb|over max_pixels"):
        compress(folder / "bomb.png", model=vaelight, max_pixels=None)
    with pytest.raises(InvalidImageError, match="decompression bomb|over max_pixels"):
        compress(folder / "bomb.png", model=vaelight)
    assert main(["compress", str(folder), "--out-dir", str(tmp_path / "out"), "--model", str(vaelight.path)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and "bomb.png: error" in err
    assert (tmp_path / "out" / "ok.sdz").is_file() and not (tmp_path / "out" / "bomb.sdz").exists()


def test_animated_images_warn_that_the_first_frame_is_used(fake_model, tmp_path):
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "blue")]
    frames[0].save(tmp_path / "a.gif", save_all=True, append_images=frames[1:])
    with pytest.warns(UserWarning, match="2 frames; sdlite compresses the first"):
        compress(tmp_path / "a.gif", model=fake_model)


# --- CLI and files ----------------------------------------------------------------------------------------
def test_no_clobber_is_one_atomic_step(tmp_path):
    target = tmp_path / "t.bin"
    target.write_bytes(b"first")
    with pytest.raises(OutputExists):
        write_atomic(target, lambda f: f.write(b"second"), force=False)
    assert target.read_bytes() == b"first"
    results = []

    def writer(payload):
        try:
            write_atomic(tmp_path / "race.bin", lambda f: f.write(payload), force=False)
            results.append(payload)
        except OutputExists:
            results.append(None)

    threads = [threading.Thread(target=writer, args=(bytes([i]) * 1000,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [r for r in results if r is not None]
    assert len(winners) == 1 and (tmp_path / "race.bin").read_bytes() == winners[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["race.bin", "t.bin"]  # no temporary file left


def test_two_cli_runs_into_one_folder_never_overwrite_each_other(vaelight, tmp_path, photo, monkeypatch, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.roll(photo, 7 * i, axis=0)).save(folder / f"im{i}.png")
    out = tmp_path / "out"
    out.mkdir()
    import sdlite.cli as cli

    original = cli.write_atomic

    def late_rival(target, write, *, force):  # another run writes the same file between our check and our write
        target.write_bytes(b"the other run's file")
        return original(target, write, force=force)

    monkeypatch.setattr(cli, "write_atomic", late_rival)
    assert main(["compress", str(folder), "--out-dir", str(out), "--model", str(vaelight.path)]) == 0  # kept: the other run's counts as done
    assert all((out / f"im{i}.sdz").read_bytes() == b"the other run's file" for i in range(3))
    err = capsys.readouterr().err
    assert err.count("kept:") == 3 and "3 already done" in err


def test_inputs_that_map_to_one_output_are_refused_before_any_work(fake_model, tmp_path, photo, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(photo).save(folder / "a.png")
    Image.fromarray(photo).save(folder / "a.jpg")
    assert main(["compress", str(folder), "--out-dir", str(tmp_path / "out"), "--model", "nowhere", "--force"]) == 2
    assert "several inputs map to one output" in capsys.readouterr().err and "a.sdz" not in os.listdir(tmp_path / "out")


def test_ctrl_c_ends_a_batch_cleanly(vaelight, tmp_path, photo, monkeypatch, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(photo).save(folder / f"im{i}.png")
    assert main(["compress", str(folder), "--out-dir", str(tmp_path / "sdz"), "--model", str(vaelight.path)]) == 0
    import sdlite.cli as cli

    calls = []

    def interrupted_decompress(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return decompress(*args, **kwargs)

    monkeypatch.setattr(cli, "decompress", interrupted_decompress)
    capsys.readouterr()
    assert main(["decompress", str(tmp_path / "sdz"), "--out-dir", str(tmp_path / "png"), "--model", str(vaelight.path)]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip().splitlines()[-1].startswith("interrupted after 1 of 3 files")
    assert os.listdir(tmp_path / "png") == ["im0.decoded.png"]  # the finished file, and nothing partial

    def interrupted_write(handle):
        handle.write(b"half a file")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_atomic(tmp_path / "png" / "cut.png", interrupted_write, force=True)
    assert os.listdir(tmp_path / "png") == ["im0.decoded.png"]


def test_an_out_dir_that_cannot_be_created_is_a_usage_error(fake_model, tmp_path, photo, capsys):
    Image.fromarray(photo).save(tmp_path / "a.png")
    (tmp_path / "file").write_text("a file, not a folder")
    assert main(["compress", str(tmp_path / "a.png"), "--out-dir", str(tmp_path / "file" / "sub"), "--model", "nowhere"]) == 2
    err = capsys.readouterr().err
    assert "cannot create --out-dir" in err and "Traceback" not in err


@pytest.mark.parametrize("seed", [-1, 1.5, True, 2**64])
def test_seed_must_be_a_non_negative_integer(fake_model, photo, seed):
    with pytest.raises(OptionError, match="seed must be an integer"):
        decompress(compress(photo, model=fake_model), model=fake_model, seed=seed)


def test_a_budget_above_the_largest_stream_gives_the_finest_step_at_once():
    from sdlite.methods.entropy import rate

    z = np.random.default_rng(1).normal(0, 4, (4, 24, 32)).astype(np.float32)
    stats: dict = {}
    data = compress_latents(z, model_id="0" * 16, target_bytes=10**6, stats=stats)
    assert stats["step"] == rate.STEP_SEARCH_FINEST and len(data) < 10**6
    assert len(data) > len(compress_latents(z, model_id="0" * 16, quality=100))  # finer than quality 100


def test_option_errors_are_reported_once_and_empty_info_is_an_error(vaelight, tmp_path, photo, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(photo).save(folder / f"im{i}.png")
    assert main(["compress", str(folder), "--out-dir", str(tmp_path / "o"), "--model", str(vaelight.path), "--quality", "0"]) == 2
    assert capsys.readouterr().err.count("quality must be") == 1
    assert main(["decompress", str(folder), "--model", str(vaelight.path), "--seed", "-3"]) == 2  # no .sdz: usage error
    (tmp_path / "empty").mkdir()
    assert main(["info", str(tmp_path / "empty")]) == 2
    assert "no .sdz inputs or model bundles found" in capsys.readouterr().err


# --- found by reading the code --------------------------------------------------------------------------------
@pytest.mark.skipif("CUDAExecutionProvider" in __import__("onnxruntime").get_available_providers(), reason="CUDA attaches here")
def test_a_strict_request_after_a_lenient_one_still_raises(vaelight):
    path = str(vaelight.path / "vae_encoder" / "model.onnx")
    wanted = ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.warns(RuntimeWarning, match="did not attach"):
        lenient = sessions.cached_session(path, wanted, threads=3)
    with pytest.raises(ProviderError, match="did not attach"):
        sessions.cached_session(path, wanted, threads=3, strict=True)
    assert sessions.cached_session(path, wanted, threads=3) is lenient


def test_a_slow_build_of_one_component_does_not_block_another(vaelight, monkeypatch):
    release, started = threading.Event(), threading.Event()
    original = sessions.cached_session

    def slow_for_encoder(path, providers=None, **kwargs):
        if "vae_encoder" in path:
            started.set()
            assert release.wait(60)
        return original(path, providers, **kwargs)

    monkeypatch.setattr(sessions, "cached_session", slow_for_encoder)
    model = sdlite.model.Model(vaelight.path, threads=1)
    worker = threading.Thread(target=model.session, args=("vae_encoder",))
    worker.start()
    try:
        assert started.wait(60)
        assert model.session("vae_decoder") is not None  # returns while the encoder's build is in progress
    finally:
        release.set()
        worker.join(60)


def test_bundle_files_are_checked_against_the_manifest(tiny_bundle, tmp_path, photo):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_bundle, copy)
    decoder = copy / "vae_decoder" / "model.onnx"
    original = decoder.read_bytes()
    decoder.write_bytes(original[:-100])  # truncated
    with pytest.raises(BundleError, match="truncated or replaced"):
        load_model(copy)
    swapped = bytearray(original)
    swapped[len(swapped) // 2] ^= 0xFF  # same size, other bytes
    decoder.write_bytes(bytes(swapped))
    model = load_model(copy)  # sizes match: the hash is checked when the session is built
    with pytest.raises(BundleError, match="sha256"):
        model.session("vae_decoder")
    unchecked = load_model(copy, verify=False)
    assert unchecked.session("vae_encoder") is not None


def test_a_damaged_manifest_is_a_bundle_error(tmp_path):
    folder = fake_bundle(tmp_path / "b")
    (folder / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="cannot read"):
        load_model(folder, session_overrides=fake_sessions())
    manifest = {"bundle_format": 1}
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="lacks a valid"):
        load_model(folder, session_overrides=fake_sessions())
