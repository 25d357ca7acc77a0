"""Pinned TAE releases fetched from a local 127.0.0.1 server: verified before anything is kept, a bad
download never poisons the cache, a deadline that holds whatever the server's pace, one build for many
processes, and a cache another user could have planted refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import sdlite
from sdlite import fetch, releases, tae
from sdlite.errors import BundleError, ModelNotFoundError

from .release_server import _Server, github, needs_torch, release_files  # noqa: F401 - fixtures
from .tae_folder import tiny_weights

ROOT = Path(__file__).resolve().parent.parent

def _photo():
    rng = np.random.default_rng(0)
    return (rng.random((64, 96, 3)) * 255).astype(np.uint8)


@needs_torch
def test_a_pinned_release_is_fetched_verified_and_built_once(github):
    cache, release = github
    data = sdlite.compress(_photo(), model="taesd", target_bytes=400)
    assert sorted(_Server.requests) == [f"/{releases.REPOSITORY}/raw/{'d' * 40}/taesd_decoder.pth",
                                        f"/{releases.REPOSITORY}/raw/{'e' * 40}/taesd_encoder.pth"]
    assert sdlite.decompress(data, model="taesd@9.9").size == (96, 64)
    assert len(_Server.requests) == 2
    manifest = sdlite.load_model("taesd").manifest
    assert manifest["source"]["release"] == "taesd@9.9" and manifest["source"]["decoder"]["git_blob"] == release.decoder.blob


@needs_torch
def test_the_pth_build_matches_the_diffusers_build(github, tmp_path):
    """The same weights through the .pth path and through an AutoencoderTiny folder: the same model id."""
    from .tae_folder import write_tae_folder

    config = {**tae.STANDARD_CONFIG, "latent_channels": 4}
    weights = tiny_weights(config, seed=3)
    weights = {k: (v.astype(np.float16).astype(np.float32) if k.startswith("decoder") else v) for k, v in weights.items()}
    folder = tmp_path / "taesd"
    write_tae_folder(folder, config={**{k: v for k, v in config.items() if k != "name_or_path"}, **_TINY_KEYS}, weights=weights)
    assert sdlite.load_model("taesd").model_id == sdlite.load_model(str(folder)).model_id


_TINY_KEYS = {"_class_name": "AutoencoderTiny", "act_fn": "relu", "in_channels": 3, "out_channels": 3, "upsample_fn": "nearest",
              "upsampling_scaling_factor": 2, "scaling_factor": 1.0, "shift_factor": 0.0}


@needs_torch
@pytest.mark.parametrize("mode, message", [("drop", "announced"), ("html", "not the pinned file"), ("gzip", "encoded")])
def test_a_bad_download_leaves_nothing_and_the_next_run_succeeds(github, mode, message):
    cache, release = github
    _Server.mode = mode
    with pytest.raises(ModelNotFoundError, match=message):
        sdlite.load_model("taesd")
    weights = cache / "weights" / release.label
    assert not any(p.suffix == ".pth" for p in weights.rglob("*")) if weights.exists() else True
    assert not (cache / release.label).exists()
    _Server.mode = "ok"
    assert sdlite.load_model("taesd").latent_space.name == "sd1"


@needs_torch
def test_a_wrong_digest_is_refused(github, monkeypatch):
    cache, release = github
    monkeypatch.setitem(releases.RELEASES, ("taesd", "9.9"), releases.Release(
        "taesd", "9.9", "sd1", release.encoder, releases.PinnedFile(release.decoder.file, release.decoder.commit, "0" * 40)))
    with pytest.raises(ModelNotFoundError, match="not the pinned file"):
        sdlite.load_model("taesd")
    assert not (cache / "weights" / release.label / release.decoder.file).exists()


@needs_torch
def test_a_cached_file_that_no_longer_matches_is_fetched_again(github):
    cache, release = github
    sdlite.load_model("taesd")
    target = cache / "weights" / release.label / release.encoder.file
    target.write_bytes(b"damaged")
    folder = fetch.fetch_release(release)
    assert releases.git_blob_sha1((folder / release.encoder.file).read_bytes()) == release.encoder.blob


@needs_torch
def test_a_dripping_server_is_cut_off_within_the_deadline(github, monkeypatch):
    _Server.mode = "drip"  # one byte a second
    monkeypatch.setattr(fetch, "DEADLINE_S", 2.0)
    started = time.monotonic()
    with pytest.raises(ModelNotFoundError, match="took over 2 s"):
        sdlite.load_model("taesd")
    assert time.monotonic() - started < 2.0 + 1.5  # the last read is bounded by the time left, not by TIMEOUT_S


_CONCURRENT = """
import sys, sdlite
sdlite.releases.RELEASES[("taesd", "9.9")] = sdlite.releases.Release("taesd", "9.9", "sd1",
    sdlite.releases.PinnedFile("taesd_encoder.pth", "e" * 40, sys.argv[1]), sdlite.releases.PinnedFile("taesd_decoder.pth", "d" * 40, sys.argv[2]))
sdlite.releases.DEFAULT_VERSION["taesd"] = "9.9"
print(sdlite.load_model("taesd").model_id)
"""


@needs_torch
@pytest.mark.slow
def test_eight_processes_on_an_empty_cache_all_succeed(github):
    cache, release = github
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = [subprocess.Popen([sys.executable, "-c", "import sdlite.releases\n" + _CONCURRENT, release.encoder.blob, release.decoder.blob],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(8)]
    results = [run.communicate(timeout=300) for run in runs]
    assert [run.returncode for run in runs] == [0] * 8, [err[-400:] for _, err in results]
    assert len({out.strip() for out, _ in results}) == 1
    assert len(_Server.requests) == 2  # one process fetched; the others waited for its bundle
    assert [p.name for p in cache.iterdir() if p.name.startswith("taesd")] == [release.label]


@pytest.mark.skipif(os.getuid() != 0, reason="planting a folder as another user needs root")
def test_a_cache_folder_of_another_user_is_refused(github):
    cache, release = github
    planted = cache / release.label
    planted.mkdir(parents=True)
    os.chown(planted, 12345, 12345)
    with pytest.raises(BundleError, match="belongs to user 12345"):
        sdlite.load_model("taesd")


def test_a_cache_others_may_write_is_refused(tmp_path, monkeypatch):
    cache = tmp_path / "shared-cache"
    cache.mkdir()
    cache.chmod(0o777)
    monkeypatch.setenv(fetch.ENV_CACHE_DIR, str(cache))
    with pytest.raises(BundleError, match="may be written by other users"):
        fetch.bundle_for_name("taesd")


def test_clear_downloads_removes_only_what_sdlite_put_there(tmp_path, monkeypatch):
    cache = tmp_path / "home"
    cache.mkdir()
    monkeypatch.setenv(fetch.ENV_CACHE_DIR, str(cache))
    for name in ("weights/taesd@1.3", "taesd@1.3/vae_decoder", "built/sd1-0123", "Documents"):
        (cache / name).mkdir(parents=True)
    (cache / "notes.txt").write_text("mine")
    fetch.clear_downloads()
    assert sorted(p.name for p in cache.iterdir()) == ["Documents", "notes.txt"]


def test_names_versions_and_suggestions():
    assert releases.lookup("taesd").label == "taesd@1.3"
    assert releases.lookup("taef1@1.0").decoder.commit.startswith("8909b44")
    with pytest.raises(ModelNotFoundError, match="its releases: 1.0, 1.1, 1.2, 1.3"):
        releases.lookup("taesd@2.0")
    with pytest.raises(ModelNotFoundError, match="did you mean taesd"):
        sdlite.load_model("tasd")


TAEF2_PTH = Path(os.environ.get("SDLITE_SHARED", ROOT.parent / "shared")) / "models" / "taef2-pth"


@pytest.mark.skipif(not TAEF2_PTH.is_dir(), reason="../shared/models/taef2-pth (the published TAEF2 files) is not here")
def test_the_published_files_match_their_pinned_blobs():
    release = releases.lookup("taef2")
    for pinned in (release.encoder, release.decoder):
        assert releases.git_blob_sha1((TAEF2_PTH / pinned.file).read_bytes()) == pinned.blob


@needs_torch
def test_the_first_two_commands_from_an_empty_cache_and_again(github, tmp_path, monkeypatch, capsys):
    """`sdlite compress photo.png` then `sdlite decompress photo.sdz`, no other argument, twice; offline, one line each."""
    from PIL import Image

    from sdlite import cli

    monkeypatch.setenv("SDLITE_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.delenv("SDLITE_MODEL", raising=False)
    photo = tmp_path / "photo.png"
    Image.fromarray(_photo()).save(photo)
    original = photo.read_bytes()
    for _ in range(2):
        assert cli.main(["compress", str(photo)]) == 0
        assert cli.main(["decompress", str(tmp_path / "photo.sdz")]) == 0
    assert photo.read_bytes() == original and Image.open(tmp_path / "photo.decoded.png").size == (96, 64)
    assert len(_Server.requests) == 2
    monkeypatch.setenv(fetch.ENV_CACHE_DIR, str(tmp_path / "empty-cache"))
    monkeypatch.setenv(fetch.ENV_OFFLINE, "1")
    capsys.readouterr()
    assert cli.main(["compress", str(photo), "-o", str(tmp_path / "again.sdz")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: taesd@9.9 is not in the cache and downloads are off")


def test_a_server_dripping_its_headers_is_cut_off_within_the_deadline(tmp_path, monkeypatch):
    """The deadline holds before the body too: a server that sends its status line and headers a byte at a time."""
    import socket
    import threading

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    stop = threading.Event()

    def serve():
        connection, _ = listener.accept()
        try:
            connection.recv(4096)
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nX-Slow: " + b"a" * 1000:
                if stop.is_set():
                    break
                connection.sendall(bytes([byte]))
                time.sleep(0.2)
        except OSError:
            pass
        finally:
            connection.close()

    threading.Thread(target=serve, daemon=True).start()
    monkeypatch.setattr(fetch, "DEADLINE_S", 1.5)
    started = time.monotonic()
    try:
        with pytest.raises(ModelNotFoundError, match="took over 1.5 s"):
            fetch.download(f"http://127.0.0.1:{listener.getsockname()[1]}/x.pth", 1000)
        assert time.monotonic() - started < 1.5 + 1.0
    finally:
        stop.set()
        listener.close()
