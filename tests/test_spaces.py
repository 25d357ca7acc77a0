"""Every latent space coded well (issue 18): channel transforms, per-space rules, round trips and rate control
with each TAE model, the latent-space header's cross-checks, and choosing a bundle by rate."""

import dataclasses
import os

import numpy as np
import pytest
from PIL import Image

from sdlite import BitstreamError, OptionError, bitstream, compress, compress_latents, decompress, decompress_latents, info, load_model
from sdlite import latent_space as spaces
from sdlite.registry import BEST_FROM_BPP, choose_model, find_model
from sdlite.cli import main
from sdlite.methods import entropy
from sdlite.methods.entropy import channels, params

from .conftest import SHARED

MODEL_ID = "0123012301230123"
TAE = {"sd1": "taesd", "sdxl": "taesdxl", "sd3": "taesd3", "flux": "taef1"}

# A transform's id is in streams: its definition must never change (a new measurement gets a new id).
PINNED_TRANSFORMS = {0: "ec58bd35de72477d", 1: "f2ca1285b13725ed", 2: "edad34b825bc9494", 3: "e469cbafc2d0a03d", 4: "b83c74d8d681230f",
                     5: "9050ad7afa2cea80"}


def test_channel_transform_definitions_are_frozen():
    assert {t.id: t.digest() for t in channels.TRANSFORMS.values()} == PINNED_TRANSFORMS


@pytest.mark.parametrize("space", ["sdxl", "sd3", "flux", "flux2"])
def test_transforms_invert_and_code_in_sd1_units(space):
    transform = channels.for_space(space)
    definition = spaces.by_name(space)
    rng = np.random.default_rng(0)
    raw = rng.normal(0, 1 / definition.coding_unit * 3.7, (definition.channels, 5, 7))
    assert np.allclose(transform.inverse(transform.forward(raw)), raw, atol=1e-9)
    assert abs(np.std(transform.forward(raw)) - 3.7) < 0.5  # coded values have SD 1.x's raw scale
    if definition.channel_basis is not None:
        basis = np.asarray(definition.channel_basis) / spaces.BASIS_ONE
        assert np.abs(basis @ basis.T - np.eye(definition.channels)).max() < 2e-4  # orthonormal rows


def test_sd1_keeps_raw_units_and_the_identity():
    assert channels.for_space("sd1") is channels.IDENTITY and channels.for_space(None) is channels.IDENTITY


@pytest.mark.parametrize("space", ["sd1", "sdxl", "sd3", "flux", "flux2"])
def test_latents_of_every_space_round_trip_with_their_transform(space):
    definition = spaces.by_name(space)
    rng = np.random.default_rng(3)
    z = (rng.normal(0, 1, (definition.channels, 24, 32)).cumsum(axis=2) / 4 / definition.coding_unit).astype(np.float32)
    data = compress_latents(z, model_id=MODEL_ID, latent_space=space, quality=90)
    header, _ = bitstream.unpack(data)
    parsed = params.parse(header.params, header.latent_shape, header.version)
    assert info(data)["latent_space"] == space and parsed.transform == channels.for_space(space).id
    back = decompress_latents(data)[0]
    assert np.abs(back - z).max() < 0.15 * np.abs(z).max()
    for target in (600, 1200) if definition.channels == 4 else (1500, 4000):
        sized = compress_latents(z, model_id=MODEL_ID, latent_space=space, target_bytes=target)
        assert 0.95 * target <= len(sized) <= target


def test_quality_maps_to_about_the_same_size_in_every_space():
    """Coding units make quality mean the same across spaces: latents of the same shape in SD 1.x units
    give streams of similar size whatever the space's own scale."""
    rng = np.random.default_rng(4)
    base = rng.normal(0, 1, (4, 32, 48)).cumsum(axis=2) / 3
    sizes = {space: len(compress_latents((base / spaces.by_name(space).coding_unit).astype(np.float32), model_id=MODEL_ID,
                                         latent_space=space)) for space in ("sd1", "sdxl")}
    assert 0.9 < sizes["sdxl"] / sizes["sd1"] < 1.1


def test_a_16_channel_transform_refuses_other_channel_counts():
    with pytest.raises(OptionError, match="latent space sd3 has 16 channels, the latents 4"):
        entropy.encode(np.zeros((4, 4, 4), np.float32), latent_space="sd3")
    data = compress_latents(np.ones((16, 6, 6), np.float32), model_id=MODEL_ID, latent_space="sd3")
    header, payload = bitstream.unpack(data)
    forged = bitstream.pack(bitstream.Header(header.method, MODEL_ID, 48, 48, (4, 6, 6), params=header.params), payload)
    with pytest.raises(BitstreamError):
        decompress_latents(forged)


@pytest.mark.parametrize("space,channels_count", [("sd1", 16), ("sdxl", 16), ("sd3", 4), ("flux", 4), ("sd3", 1)])
def test_the_header_cross_checks_space_channels_and_factor(space, channels_count):
    definition = spaces.by_name(space)
    header = bitstream.Header(2, MODEL_ID, 64, 64, (channels_count, 8, 8), latent_space=definition.id)
    with pytest.raises(BitstreamError, match=f"claims latent space {space}"):
        bitstream.unpack(bitstream.pack(header, b""))
    wrong_factor = bitstream.Header(2, MODEL_ID, 64, 64, (definition.channels, 4, 4), factor=16, latent_space=definition.id)
    with pytest.raises(BitstreamError, match="factor 16"):
        bitstream.unpack(bitstream.pack(wrong_factor, b""))


def test_per_space_rules_are_where_the_space_is_defined():
    assert spaces.by_name("sdxl").bits_per_cell > spaces.by_name("sd1").bits_per_cell  # TAESDXL wanted finer latents
    assert spaces.by_name("sd3").channel_basis is not None and spaces.by_name("sdxl").channel_basis is None


# --- the TAE models of every space (skip without ../shared) ------------------------------------------------
def _tae(space):
    folder = SHARED / "models" / TAE[space]
    if not (folder / "vae_decoder" / "model.onnx").is_file():
        pytest.skip(f"real-weights model absent: {folder}")
    return load_model(folder)


@pytest.mark.parametrize("space", ["sd1", "sdxl", "sd3", "flux"])
def test_every_space_round_trips_a_photo_within_its_budget(space, kodak):
    model = _tae(space)
    photo = Image.open(kodak / "kodim03.png").convert("RGB").crop((192, 128, 576, 384))  # 384x256
    for budget in (1200, 4000):
        stats: dict = {}
        data = compress(photo, model=model, target_bytes=budget, stats=stats)
        assert 0.95 * budget <= len(data) <= budget and info(data)["latent_space"] == space
        decoded = np.asarray(decompress(data, model=model), dtype=np.float64)
        psnr = 10 * np.log10(255**2 / np.mean((decoded - np.asarray(photo, dtype=np.float64)) ** 2))
        assert psnr > 17.0, (space, budget, psnr)
    loose = compress(photo, model=model, target_bytes=1200, stats=(low := {}))
    assert low["scale"] >= 1.0 and len(loose) <= 1200


def test_sdxl_codes_smaller_images_at_budgets_where_sd1_does_not(kodak):
    """The coded-scale rule reads each space's bits per cell: at 0.2 bpp TAESD codes the full size,
    TAESDXL (measured to want finer latents) a smaller image."""
    photo = Image.open(kodak / "kodim05.png").convert("RGB")
    budget = int(0.2 * photo.width * photo.height / 8)
    chosen = {}
    for space in ("sd1", "sdxl"):
        stats: dict = {}
        compress(photo, model=_tae(space), target_bytes=budget, stats=stats)
        chosen[space] = stats["scale"]
    assert chosen["sd1"] == 1.0 and chosen["sdxl"] > 1.0


# --- choosing a bundle by rate ---------------------------------------------------------------------------------
def _linked_models(tmp_path, names):
    folder = tmp_path / "models"
    folder.mkdir()
    for name in names:
        source = SHARED / "models" / name
        if not (source / "vae_decoder" / "model.onnx").is_file():
            pytest.skip(f"real-weights model absent: {source}")
        os.symlink(source, folder / name)
    return folder


def test_choose_model_follows_the_measured_crossover(tmp_path):
    folder = _linked_models(tmp_path, ["taesd", "taesd3", "taesdxl"])
    assert choose_model(0.05, folder).name == "taesd"
    assert choose_model(BEST_FROM_BPP["sd3"] + 0.1, folder).name == "taesd3"
    only_sd3 = tmp_path / "only"
    only_sd3.mkdir()
    os.symlink(SHARED / "models" / "taesd3", only_sd3 / "taesd3")
    assert choose_model(0.05, only_sd3).name == "taesd3"  # the next best space present
    assert find_model(load_model(folder / "taesd3").model_id, folder).name == "taesd3"


def test_cli_auto_model_compresses_by_rate_and_decompresses_with_the_encoder(tmp_path, kodak, monkeypatch, capsys):
    folder = _linked_models(tmp_path, ["taesd", "taesd3"])
    monkeypatch.setenv("SDLITE_MODELS_DIR", str(folder))
    photo = tmp_path / "photo.png"
    Image.open(kodak / "kodim07.png").convert("RGB").crop((0, 0, 256, 192)).save(photo)
    high = BEST_FROM_BPP["sd3"] + 0.2
    assert main(["compress", str(photo), "-o", str(tmp_path / "high.sdz"), "--model", "auto", "--bpp", str(high)]) == 0
    assert main(["compress", str(photo), "-o", str(tmp_path / "low.sdz"), "--model", "auto", "--bpp", "0.1"]) == 0
    high_info, low_info = (info((tmp_path / f"{n}.sdz").read_bytes()) for n in ("high", "low"))
    assert high_info["latent_space"] == "sd3" and low_info["latent_space"] == "sd1"
    assert high_info["total_bytes"] <= high * 256 * 192 / 8
    assert main(["decompress", str(tmp_path / "high.sdz"), str(tmp_path / "low.sdz"), "--out-dir", str(tmp_path / "png"), "--model", "auto"]) == 0
    assert sorted(os.listdir(tmp_path / "png")) == ["high.decoded.png", "low.decoded.png"]
    assert main(["compress", str(photo), "-o", str(tmp_path / "x.sdz"), "--model", "auto"]) == 2
    assert "--model auto chooses the bundle by rate" in capsys.readouterr().err
    assert main(["compress", str(photo), "-o", str(tmp_path / "x.sdz"), "--bpp", "0.1", "--quality", "50"]) == 2


@pytest.mark.parametrize("space", ["sd1", "sd3", "flux2"])
def test_near_lossless_codes_every_band_with_one_step_at_quality_85(space):
    definition = spaces.by_name(space)
    z = (np.random.default_rng(1).normal(0, 1, (definition.channels, 16, 24)).cumsum(axis=2) / 4 / definition.coding_unit).astype(np.float32)
    data = compress_latents(z, model_id=MODEL_ID, latent_space=space, near_lossless=True)
    header, _ = bitstream.unpack(data, max_pixels=None)
    parsed = params.parse(header.params, header.latent_shape, header.version)
    assert parsed.gains_q == (16, 16)  # GAIN_SCALE units: 1.0 for both detail levels
    assert len(data) == len(compress_latents(z, model_id=MODEL_ID, latent_space=space, near_lossless=True, quality=85))
    finer = compress_latents(z, model_id=MODEL_ID, latent_space=space, near_lossless=True, quality=95)
    assert len(finer) > len(data)
    assert np.abs(decompress_latents(finer)[0] - z).max() < np.abs(decompress_latents(data)[0] - z).max()


def test_near_lossless_is_an_entropy_setting():
    z = np.zeros((4, 8, 8), np.float32)
    with pytest.raises(OptionError, match="entropy"):
        compress_latents(z, model_id=MODEL_ID, latent_space="sd1", method="palette", near_lossless=True)
    with pytest.raises(OptionError, match="True or False"):
        compress_latents(z, model_id=MODEL_ID, latent_space="sd1", near_lossless="yes")


def test_flux2_weights_make_the_one_step_finer_where_the_decoder_looks():
    """Transform 5 codes component k in units multiplied by its weight (COMPONENT_WEIGHT_ONE units, geometric
    mean 1): noise of one coded unit lands in the latents as 1/weight of transform 4's, and the inverse undoes it."""
    weighted, plain = channels.TRANSFORMS[5], channels.TRANSFORMS[4]
    weights = np.asarray(spaces.by_name("flux2").component_weights) / spaces.COMPONENT_WEIGHT_ONE
    assert weighted.weights == spaces.by_name("flux2").component_weights and len(weights) == 32
    assert abs(np.exp(np.mean(np.log(weights))) - 1) < 1e-3 and weights.max() / weights.min() > 2
    rng = np.random.default_rng(4)
    raw = rng.normal(0, 0.9, (32, 3, 5))
    np.testing.assert_allclose(weighted.forward(raw), plain.forward(raw) * weights[:, None, None], rtol=1e-12, atol=1e-12)
    assert np.allclose(weighted.inverse(weighted.forward(raw)), raw, atol=1e-9)
    k = int(weights.argmax())
    unit = np.zeros((32, 1, 1))
    unit[k] = 1.0
    assert np.linalg.norm(weighted.inverse(unit)) == pytest.approx(np.linalg.norm(plain.inverse(unit)) / weights[k], rel=1e-3)


def test_a_version_4_stream_may_not_name_transform_5():
    """Transform 5 exists from format version 5: a version 4 header around its parameters is refused by name,
    while version 4's flux2 transform 4 still parses."""
    z = (np.random.default_rng(5).normal(0, 1, (32, 6, 8)) / 4.4).astype(np.float32)
    data = compress_latents(z, model_id=MODEL_ID, latent_space="flux2", quality=70)
    header, _ = bitstream.unpack(data)
    assert header.version == 5 and params.parse(header.params, header.latent_shape, 5).transform == 5
    with pytest.raises(BitstreamError, match="channel transform 5 .* needs format version 5"):
        params.parse(header.params, header.latent_shape, 4)
    older = params.parse(header.params, header.latent_shape, 5)
    as_four = dataclasses.replace(older, transform=4, version=4)
    assert params.parse(as_four.pack(), header.latent_shape, 4).transform == 4
