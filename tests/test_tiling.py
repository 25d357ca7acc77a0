import numpy as np
import pytest

from sdlite import OptionError, compress, decompress
from sdlite import tiling


@pytest.mark.parametrize("length,tile,overlap,multiple", [
    (10, 96, 16, 1), (96, 96, 16, 1), (97, 96, 16, 1), (100, 96, 16, 8), (200, 48, 16, 1), (256, 96, 16, 8), (1000, 32, 16, 2),
])
def test_tiles_cover_everything_with_enough_overlap_and_no_waste(length, tile, overlap, multiple):
    size, starts = tiling.tile_layout(length, tile, overlap, multiple)
    covered = np.zeros(length, int)
    for start in starts:
        covered[start : start + size] += 1
    assert covered.min() >= 1 and starts[0] == 0 and starts[-1] + size == length
    assert size <= tile and (size == length or size % multiple == 0)
    assert all(0 < b - a <= size - overlap for a, b in zip(starts, starts[1:]))  # neighbours share >= overlap
    if len(starts) > 1:  # no fewer tiles would do, and the tiles are no bigger than they need be
        assert (len(starts) - 2) * (tile - overlap) < length - tile
        assert size - multiple < -(-(length + (len(starts) - 1) * overlap) // len(starts))


def test_an_input_just_over_one_tile_costs_little_more():
    size, starts = tiling.tile_layout(100, 96, 16)
    assert (size, starts) == (58, [0, 42])  # 2x2 tiles of 58 cells: 1.35x the area, not 4 x 96 x 96


def _upsample(piece):  # a local "decoder": each cell becomes 8x8 values
    return np.repeat(np.repeat(piece[:, :3] * 2.0, 8, axis=2), 8, axis=3)


def _pool(piece):  # a local "encoder"
    _, c, h, w = piece.shape
    return piece.reshape(1, c, h // 8, 8, w // 8, 8).mean(axis=(3, 5))


def test_tiled_equals_whole_for_local_maps():
    rng = np.random.default_rng(0)
    latents = rng.normal(size=(1, 4, 70, 45)).astype(np.float32)
    whole = _upsample(latents)
    tiled = tiling.run_tiled(_upsample, latents, cell_in=1, cell_out=8, tile=32)
    assert tiled.shape == whole.shape and np.allclose(tiled, whole, atol=1e-5)
    pixels = rng.normal(size=(1, 3, 8 * 50, 8 * 81)).astype(np.float32)
    assert np.allclose(tiling.run_tiled(_pool, pixels, cell_in=8, cell_out=1, tile=32), _pool(pixels), atol=1e-5)


def test_blend_weights_sum_to_one_across_seams():
    calls = []

    def constant_per_tile(piece):  # maximally non-local: each tile returns its own constant
        calls.append(piece.shape)
        return np.full(piece.shape, float(len(calls)), np.float32)

    out = tiling.run_tiled(constant_per_tile, np.zeros((1, 1, 100, 100), np.float32), cell_in=1, cell_out=1, tile=40)[0, 0]
    assert tiling.tile_layout(100, 40, 16) == (37, [0, 21, 42, 63])
    assert len(calls) == 16 and all(shape == (1, 1, 37, 37) for shape in calls)
    assert out.min() >= 1 and out.max() <= 16  # convex blends of the tiles' values
    assert np.all(out[:21, :21] == 1) and np.all(out[-21:, -21:] == 16)  # away from seams: one tile alone
    assert np.all(np.diff(out[0]) >= 0) and np.all(np.diff(out[:, 0]) >= 0)  # seams ramp, no overshoot


def test_small_inputs_and_no_tiling_are_one_call():
    calls = []
    run = lambda piece: calls.append(piece.shape) or piece  # noqa: E731
    tiling.run_tiled(run, np.zeros((1, 1, 96, 96)), cell_in=1, cell_out=1, tile=96)
    tiling.run_tiled(run, np.zeros((1, 1, 500, 500)), cell_in=1, cell_out=1, tile=None)
    assert calls == [(1, 1, 96, 96), (1, 1, 500, 500)]


@pytest.mark.parametrize("bad", [0, 8, 31, 40.0, True, "96"])
def test_tile_option_is_checked(bad, fake_model, photo):
    with pytest.raises(OptionError, match="tile"):
        compress(photo, model=fake_model, tile=bad)


def test_fake_pipeline_tiled_matches_untiled(fake_model):
    y, x = np.mgrid[0:300, 0:420]
    image = np.stack([(x // 3) % 256, (y // 2) % 256, ((x + y) // 4) % 256], axis=2).astype(np.uint8)
    whole = compress(image, model=fake_model, tile=None, quality=90)
    tiled = compress(image, model=fake_model, tile=32, quality=90)  # 53x38 latent cells: 2x2 tiles
    a = np.asarray(decompress(whole, model=fake_model, tile=None), dtype=float)
    b = np.asarray(decompress(tiled, model=fake_model, tile=32), dtype=float)
    assert a.shape == b.shape == (300, 420, 3) and np.abs(a - b).max() <= 1
