"""Optimised graphs (python -m export.optimize): fused U-Net attention, same results within tolerance."""

import json
import shutil

import numpy as np
import pytest

import sdlite

from .conftest import EXPORT_STACK

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not EXPORT_STACK, reason="export extra not installed (pip install -e .[export])")]


def test_optimised_bundle_decodes_like_the_plain_one(tiny_bundle, tmp_path, photo):
    from export.optimize import OPTIMIZED_FILE, optimize_bundle

    folder = tmp_path / "opt"
    shutil.copytree(tiny_bundle, folder)
    manifest = optimize_bundle(folder)
    unet = manifest["optimization"]["components"]["unet"]
    assert unet["fused"].get("MultiHeadAttention", 0) > 0 and unet["max_abs_diff"] < 1e-3
    assert manifest["components"]["unet"]["file"] == f"unet/{OPTIMIZED_FILE}"
    assert sorted(p.name for p in (folder / "unet").iterdir()) == ["config.json", OPTIMIZED_FILE]  # the unfused graph is gone
    assert optimize_bundle(folder)["optimization"]["components"]["unet"]["fused"] == unet["fused"]  # a second run keeps it
    assert manifest["model_id"] == json.loads((tiny_bundle / "manifest.json").read_text())["model_id"]  # same weights, same id
    plain, optimised = sdlite.load_model(tiny_bundle), sdlite.load_model(folder)
    assert optimised.session("unet")._model_path.endswith(OPTIMIZED_FILE)
    data = sdlite.compress(photo, model=plain)
    a = np.asarray(sdlite.decompress(data, model=plain), dtype=np.int16)
    b = np.asarray(sdlite.decompress(data, model=optimised), dtype=np.int16)
    assert np.abs(a - b).max() <= 2  # fused kernels sum in another order


def test_optimise_refuses_what_it_cannot_do(tmp_path, vaelight):
    from export import ExportError
    from export.optimize import main, optimize_bundle

    with pytest.raises(ExportError, match="no manifest.json"):
        optimize_bundle(vaelight.path)
    with pytest.raises(ExportError, match="unknown target"):
        optimize_bundle(vaelight.path, target="tpu")
    assert main([str(vaelight.path)]) == 2
