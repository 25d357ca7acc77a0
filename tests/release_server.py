"""A fake TAE release (full TAESD architecture, random weights, as .pth files) served on 127.0.0.1 the way
GitHub serves madebyollin/taesd at a commit; the pinned table is patched to name it (taesd@9.9)."""

from __future__ import annotations

import functools
import gzip
import http.server
import importlib.util
import threading
import time
from pathlib import Path

import pytest

from sdlite import fetch, releases, tae

from .tae_folder import tiny_weights

HAS_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="writing .pth files for the fake release needs torch (the export extra)")
ROOT = Path(__file__).resolve().parent.parent


def original_layout(weights: dict) -> tuple[dict, dict]:
    """diffusers names -> the published .pth names (encoder N.x, decoder (N+1).x)."""
    encoder, decoder = {}, {}
    for name, array in weights.items():
        part, _, rest = name.partition(".layers.")
        index, _, tail = rest.partition(".")
        (encoder if part == "encoder" else decoder)[f"{int(index) + (part == 'decoder')}.{tail}"] = array
    return encoder, decoder


def write_pth(path: Path, tensors: dict, *, half: bool = False) -> bytes:
    import collections

    import torch

    state = collections.OrderedDict((k, torch.from_numpy(v).half() if half else torch.from_numpy(v)) for k, v in tensors.items())
    torch.save(state, path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def release_files(tmp_path_factory):
    """A fake release (taesd@9.9, full TAESD architecture, random weights) served as madebyollin/taesd would."""
    root = tmp_path_factory.mktemp("github")
    config = {**tae.STANDARD_CONFIG, "latent_channels": 4}
    encoder, decoder = original_layout(tiny_weights(config, seed=3))
    files = {}
    for role, tensors in (("encoder", encoder), ("decoder", decoder)):
        folder = root / releases.REPOSITORY / "raw" / ("e" * 40 if role == "encoder" else "d" * 40)
        folder.mkdir(parents=True)
        files[role] = write_pth(folder / f"taesd_{role}.pth", tensors, half=role == "decoder")
    return root, files


class _Server(http.server.SimpleHTTPRequestHandler):
    mode = "ok"  # ok, drop, html, gzip, drip
    requests: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        type(self).requests.append(self.path)
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(404)
            return
        body = path.read_bytes()
        mode = type(self).mode
        if mode == "html":
            body = b"<!doctype html><html><body>rate limited</body></html>"
        self.send_response(200)
        if mode == "gzip":
            body = gzip.compress(body)
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            if mode == "drop":
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.connection.shutdown(2)
            elif mode == "drip":
                for i in range(len(body)):
                    self.wfile.write(body[i:i + 1])
                    self.wfile.flush()
                    time.sleep(1.0)
            else:
                self.wfile.write(body)
        except OSError:
            pass


@pytest.fixture
def github(release_files, tmp_path, monkeypatch):
    root, files = release_files
    release = releases.Release("taesd", "9.9", "sd1",
                               releases.PinnedFile("taesd_encoder.pth", "e" * 40, releases.git_blob_sha1(files["encoder"])),
                               releases.PinnedFile("taesd_decoder.pth", "d" * 40, releases.git_blob_sha1(files["decoder"])))
    monkeypatch.setitem(releases.RELEASES, ("taesd", "9.9"), release)
    monkeypatch.setitem(releases.DEFAULT_VERSION, "taesd", "9.9")
    monkeypatch.setenv(fetch.ENV_CACHE_DIR, str(tmp_path / "cache"))
    monkeypatch.delenv(fetch.ENV_OFFLINE, raising=False)
    _Server.mode, _Server.requests = "ok", []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Server, directory=str(root)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv(fetch.ENV_HUB_URL, f"http://127.0.0.1:{server.server_address[1]}")
    yield tmp_path / "cache", release
    server.shutdown()
    server.server_close()


