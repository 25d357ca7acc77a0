import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest

from sdlite import load_model

from .fakes import fake_bundle, fake_sessions

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("SDLITE_SHARED", ROOT.parent / "shared"))
VAELIGHT = SHARED / "models" / "vaelight"
KODAK = SHARED / "data" / "kodak"
EXPORT_STACK = all(importlib.util.find_spec(m) for m in ("torch", "diffusers", "optimum", "transformers"))


NO_HUB = "http://127.0.0.1:9"  # the discard port: nothing listens, so a fetch fails at once and never leaves the machine


@pytest.fixture(scope="session", autouse=True)
def verified_files_records(tmp_path_factory):
    """The tests' records of hashed model files and fetched models stay in a temporary folder, not in the
    user's cache, no test can reach a real hub (tests that fetch serve the files on 127.0.0.1), and the
    models folder is an empty one (a bundle in the checkout's models/ changes no test)."""
    from sdlite import fetch, verified

    saved = {name: os.environ.get(name) for name in (verified.CACHE_DIR_ENV, fetch.ENV_HUB_URL, "SDLITE_MODELS_DIR", "SDLITE_MODEL")}
    os.environ[verified.CACHE_DIR_ENV] = str(tmp_path_factory.mktemp("sdlite-cache"))
    os.environ[fetch.ENV_HUB_URL] = NO_HUB
    os.environ["SDLITE_MODELS_DIR"] = str(tmp_path_factory.mktemp("no-models"))  # tests never depend on what is in models/
    os.environ.pop("SDLITE_MODEL", None)
    yield
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="session")
def vaelight():
    if not (VAELIGHT / "vae_decoder" / "model.onnx").is_file():
        pytest.skip(f"real-weights model absent: {VAELIGHT} (the shared VAElight folder beside the repo)")
    return load_model(VAELIGHT)


@pytest.fixture(scope="session")
def taesd():
    path = SHARED / "models" / "taesd"
    if not (path / "vae_decoder" / "model.onnx").is_file():
        pytest.skip(f"real-weights model absent: {path} (the shared TAESD folder beside the repo)")
    return load_model(path)


@pytest.fixture(scope="session")
def kodak():
    if not (KODAK / "kodim01.png").is_file():
        pytest.skip(f"Kodak test images absent: {KODAK}")
    return KODAK


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """A tiny random SD bundle made by the export package (seconds)."""
    if not EXPORT_STACK:
        pytest.skip("export extra not installed (pip install -e .[export]): cannot build the tiny bundle")
    from export import export_bundle

    path = tmp_path_factory.mktemp("bundles") / "tiny"
    export_bundle(path, tiny=True)
    return path


@pytest.fixture
def fake_model(tmp_path):
    return load_model(fake_bundle(tmp_path / "fake"), session_overrides=fake_sessions())


@pytest.fixture
def photo():
    """A smooth synthetic RGB image (uint8, 45x70) with some structure."""
    y, x = np.mgrid[0:45, 0:70]
    return np.stack([(x * 3) % 256, (y * 5) % 256, ((x + y) * 2) % 256], axis=2).astype(np.uint8)


_SLOW_FIXTURES = {"vaelight", "taesd", "tiny_bundle", "taesd_bundle", "kodak"}


def pytest_collection_modifyitems(config, items):
    """Tests that export models or run real networks are marked slow (`-m "not slow"` leaves the fast tiers)."""
    for item in items:
        if _SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
