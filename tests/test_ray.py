"""sdlite on a local Ray cluster (ray.init(num_cpus=2)): the outputs are byte-identical to the
single-process API. Slow: starting Ray takes seconds."""

import importlib.util

import numpy as np
import pytest
from PIL import Image

import sdlite

from .conftest import SHARED

pytestmark = [pytest.mark.slow, pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="Ray not installed (pip install -e .[ray])")]


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


@pytest.fixture
def photos(tmp_path, photo):
    folder = tmp_path / "photos"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.roll(photo, 11 * i, axis=1)).save(folder / f"p{i}.png")  # 70x45
    Image.fromarray(np.tile(photo, (2, 2, 1))).save(folder / "big.png")  # another size: another encoder group
    return folder


def test_images_round_trip_byte_identically(ray_cluster, vaelight, photos):
    import sdlite.ray

    ds = ray_cluster.data.read_images(str(photos), include_paths=True)
    packed = sdlite.ray.compress_dataset(ds, model=vaelight.path, quality=70, batch_size=4).materialize()  # computed once, reused below
    rows = {row["path"].split("/")[-1]: row for row in packed.take_all()}
    assert set(rows) == {"p0.png", "p1.png", "p2.png", "big.png"}
    for name, row in rows.items():
        assert row["error"] == ""
        assert row["sdz"] == sdlite.compress(photos / name, model=vaelight, quality=70), name
    back = sdlite.ray.decompress_dataset(packed, model=vaelight.path).take_all()
    for row in back:
        name = row["path"].split("/")[-1]
        assert np.array_equal(row["image"], np.asarray(sdlite.decompress(rows[name]["sdz"], model=vaelight)))


def test_latent_batches_round_trip_without_a_model(ray_cluster, vaelight):
    import sdlite.ray

    rng = np.random.default_rng(0)
    latents = [rng.normal(0, 4, (4, 12, 16)).astype(np.float16) for _ in range(5)]  # diffusers' fp16 latent_dist output, raw
    ds = ray_cluster.data.from_items([{"id": i, "latents": z} for i, z in enumerate(latents)])
    packed = sdlite.ray.compress_dataset(ds, model=vaelight.path, column="latents", kind="latents", target_bytes=300).materialize()
    rows = sorted(packed.take_all(), key=lambda r: r["id"])
    assert [row["id"] for row in rows] == list(range(len(latents)))  # zip below must not pass on empty output
    for z, row in zip(latents, rows):
        assert row["sdz"] == sdlite.compress_latents(z.astype(np.float32), model=vaelight, target_bytes=300)
    decoded = sorted(sdlite.ray.decompress_dataset(packed, output="latents").take_all(), key=lambda r: r["id"])
    assert len(decoded) == len(latents)
    for row in decoded:
        assert np.array_equal(row["latents"], sdlite.decompress_latents(rows[row["id"]]["sdz"])[0])


def test_sd3_latent_caches_round_trip_on_ray(ray_cluster):
    """16-channel latents (SD3's, the caches kept for training) through Ray, as through compress_latents."""
    import sdlite.ray

    taesd3 = SHARED / "models" / "taesd3"
    if not (taesd3 / "vae_decoder" / "model.onnx").is_file():
        pytest.skip(f"real-weights model absent: {taesd3}")
    rng = np.random.default_rng(1)
    latents = [(rng.normal(0, 0.4, (16, 12, 16)).cumsum(axis=2) / 3).astype(np.float16) for _ in range(3)]
    ds = ray_cluster.data.from_items([{"id": i, "latents": z} for i, z in enumerate(latents)])
    packed = sdlite.ray.compress_dataset(ds, model=str(taesd3), column="latents", kind="latents", quality=90).materialize()
    rows = sorted(packed.take_all(), key=lambda r: r["id"])
    assert [row["id"] for row in rows] == list(range(len(latents)))
    for z, row in zip(latents, rows):
        assert row["error"] == "" and sdlite.info(row["sdz"])["latent_space"] == "sd3"
        assert row["sdz"] == sdlite.compress_latents(z.astype(np.float32), model=taesd3, quality=90)
    decoded = sorted(sdlite.ray.decompress_dataset(packed, output="latents").take_all(), key=lambda r: r["id"])
    assert len(decoded) == len(latents)
    for row in decoded:
        assert row["latents"].shape == (16, 12, 16)


def test_bad_rows_are_reported_not_raised(ray_cluster, vaelight):
    import sdlite.ray

    ds = ray_cluster.data.from_items([{"image": np.zeros((4, 4, 3), np.uint8)}, {"image": np.zeros((16, 16, 3), np.uint8)}])
    rows = sdlite.ray.compress_dataset(ds, model=vaelight.path).take_all()
    errors = sorted(r["error"] for r in rows)
    assert errors[0] == "" and "at least 8" in errors[1]
    with pytest.raises(sdlite.OptionError, match="quality"):
        sdlite.ray.compress_dataset(ds, model=vaelight.path, quality=0)


def test_cli_on_ray_writes_the_same_files(ray_cluster, vaelight, photos, tmp_path):
    from sdlite.cli import main

    assert main(["compress", str(photos), "--out-dir", str(tmp_path / "plain"), "--model", str(vaelight.path)]) == 0
    assert main(["compress", str(photos), "--out-dir", str(tmp_path / "ray"), "--model", str(vaelight.path), "--ray"]) == 0
    for path in sorted((tmp_path / "plain").iterdir()):
        assert (tmp_path / "ray" / path.name).read_bytes() == path.read_bytes(), path.name
    assert main(["compress", str(photos), "--out-dir", str(tmp_path / "ray"), "--model", str(vaelight.path), "--ray"]) == 0  # no clobber: the existing files are kept and count as done
