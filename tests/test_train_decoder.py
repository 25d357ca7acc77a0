"""python -m export.train_decoder end to end on a tiny AutoencoderTiny: pairs from sdlite's own encoder path,
a few training steps that resume from their checkpoint, and decoder-only bundles with their listing."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from .conftest import EXPORT_STACK
from .tae_folder import TINY_CONFIG, write_tae_folder

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not EXPORT_STACK, reason="training needs the export extra (torch, diffusers)")]


@pytest.fixture
def lpips_weights():
    from bench.lpips import default_weights_path

    path = default_weights_path("alexnet")
    if not path.is_file():
        pytest.skip(f"LPIPS weights absent ({path}): python -m bench fetch-lpips")
    return path


def test_pairs_train_resume_and_package(tmp_path, lpips_weights, monkeypatch):
    from export import train_decoder

    vae = write_tae_folder(tmp_path / "taesd-diffusers", config=TINY_CONFIG)
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        y, x = np.mgrid[0:300, 0:320]
        picture = np.stack([(x * (i + 1)) % 256, (y * 2) % 256, (x + y) % 256], -1) + rng.integers(0, 30, (300, 320, 3))
        Image.fromarray(np.clip(picture, 0, 255).astype(np.uint8)).save(images / f"p{i}.png")
    run = tmp_path / "run"
    assert train_decoder.main(["pairs", "--vae", str(vae), "--images", str(images), "--run", str(run), "--crops-per-image", "2"]) == 0
    summary = json.loads((run / "pairs.json").read_text())
    assert summary["pairs"] == 8 and len(summary["images"]) == 2
    # one rate list: one pair per crop; a list the space has not: exit 2, nothing made
    only_low = tmp_path / "only-low"
    assert train_decoder.main(["pairs", "--vae", str(vae), "--images", str(images), "--run", str(only_low), "--crops-per-image", "2",
                               "--rates", "low"]) == 0
    low = json.loads((only_low / "pairs.json").read_text())
    assert low["pairs"] == 4 and list(low["pair_rates"]) == ["low"]
    assert all(0.03 < rate < 0.2 for rate in train_decoder.load_pairs(only_low)["rates"])
    assert train_decoder.main(["pairs", "--vae", str(vae), "--images", str(images), "--run", str(tmp_path / "none"), "--rates", "high"]) == 2
    assert not (tmp_path / "none").exists()
    # bands wide enough that the tiny model's pairs fall in them
    monkeypatch.setitem(train_decoder.SPACE_BANDS, "sd1", {"coarse": (1e-6, float("inf"))})
    report = train_decoder.train(vae, run, minutes=0.05, lpips_weights=lpips_weights)
    assert report["coarse"]["steps"] >= 1
    again = train_decoder.train(vae, run, minutes=0.05, lpips_weights=lpips_weights)  # resumes from the checkpoint
    assert again["coarse"]["steps"] > report["coarse"]["steps"] and again["coarse"]["started_from"] is None
    # a second run (here the same pairs, copied) continues from the first run's band, and says so
    other = tmp_path / "other"
    other.mkdir()
    for name in ("pairs.npz", "pairs.json"):
        (other / name).write_bytes((run / name).read_bytes())
    started = {"coarse": run / "checkpoint-coarse.pt"}
    continued = train_decoder.train(vae, other, minutes=0.05, lpips_weights=lpips_weights, start_from=started, l1_weight=0.1,
                                    learning_rate=2e-5)
    assert continued["coarse"]["steps"] > again["coarse"]["steps"]
    assert continued["coarse"]["l1_weight"] == 0.1 and again["coarse"]["l1_weight"] == train_decoder.L1_WEIGHT
    # the lower rate replaces the one the first run's optimizer state carried
    import torch

    assert again["coarse"]["learning_rate"] == train_decoder.LEARNING_RATE and continued["coarse"]["learning_rate"] == 2e-5
    assert torch.load(run / "checkpoint-coarse.pt", weights_only=False)["optimizer"]["param_groups"][0]["lr"] == train_decoder.LEARNING_RATE
    assert torch.load(other / "checkpoint-coarse.pt", weights_only=False)["optimizer"]["param_groups"][0]["lr"] == 2e-5
    assert continued["coarse"]["started_from"] == {"checkpoint": str(run / "checkpoint-coarse.pt"), "step": again["coarse"]["steps"]}
    resumed = train_decoder.train(vae, other, minutes=0.05, lpips_weights=lpips_weights, start_from=started)  # its own checkpoint wins
    assert resumed["coarse"]["steps"] > continued["coarse"]["steps"] and resumed["coarse"]["started_from"] == continued["coarse"]["started_from"]
    for bad in (["--start-from", "coarse"], ["--start-from", "nope=" + str(run / "checkpoint-coarse.pt")],
                ["--start-from", "coarse=" + str(tmp_path / "absent.pt")]):
        assert train_decoder.main(["train", "--vae", str(vae), "--run", str(other), "--minutes", "0.01", *bad]) == 2
    listing = train_decoder.package(vae, run, tmp_path / "taesd-codec", name="taesd-codec")
    assert listing["bands"]["coarse"]["max_step"] is None and (tmp_path / "taesd-codec" / "LICENSE").is_file()
    import sdlite

    band = sdlite.load_model(tmp_path / "taesd-codec" / "coarse")
    assert band.components == {"vae_decoder"} and band.latent_space.name == "sd1"
    assert band.decode(np.zeros((1, 4, 4, 4), np.float32)).shape == (1, 3, 32, 32)
    # a packaged band is a starting point too (its weights exactly, its step count; a fresh optimizer)
    checkpoint = torch.load(run / "checkpoint-coarse.pt", weights_only=False)
    weights, trained = train_decoder.bundle_decoder_weights(tmp_path / "taesd-codec" / "coarse", checkpoint["decoder"])
    assert trained["steps"] == checkpoint["step"]
    assert all(torch.equal(weights[name], value) for name, value in checkpoint["decoder"].items())
    from_bundle = tmp_path / "from-bundle"
    from_bundle.mkdir()
    for name in ("pairs.npz", "pairs.json"):
        (from_bundle / name).write_bytes((run / name).read_bytes())
    assert train_decoder.main(["train", "--vae", str(vae), "--run", str(from_bundle), "--minutes", "0.05",
                               "--start-from", f"coarse={tmp_path / 'taesd-codec' / 'coarse'}"]) == 0
    rebuilt = json.loads((from_bundle / "training.json").read_text())["coarse"]
    assert rebuilt["started_from"] == {"bundle": str(tmp_path / "taesd-codec" / "coarse"), "step": checkpoint["step"]}
    assert rebuilt["steps"] > checkpoint["step"]
    wrong = dict(checkpoint["decoder"])
    first = next(iter(wrong))
    wrong[first] = torch.zeros(3, *wrong[first].shape)
    with pytest.raises(ValueError, match="shape"):
        train_decoder.bundle_decoder_weights(tmp_path / "taesd-codec" / "coarse", wrong)
    with pytest.raises(ValueError, match="no weights"):
        train_decoder.bundle_decoder_weights(tmp_path / "taesd-codec" / "coarse", {"layers.99.weight": wrong[first]})
    assert train_decoder.main(["train", "--vae", str(vae), "--run", str(from_bundle), "--minutes", "0.01", "--learning-rate", "0"]) == 2
    other_base = write_tae_folder(tmp_path / "other-diffusers", config={**TINY_CONFIG, "decoder_block_out_channels": [16, 16, 16, 16]})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    for name in ("pairs.npz", "pairs.json"):
        (elsewhere / name).write_bytes((run / name).read_bytes())
    assert train_decoder.main(["train", "--vae", str(other_base), "--run", str(elsewhere), "--minutes", "0.01",
                               "--start-from", f"coarse={tmp_path / 'taesd-codec' / 'coarse'}"]) == 2  # another network's band
    assert os.environ.get("SDLITE_HUB_URL")  # no network was used: conftest's discard port
