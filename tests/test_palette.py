import numpy as np
import pytest

from sdlite.methods.palette.colours import PALETTE_SIZE, apply_palette, build_palette, dither


def _latent_image(seed=0, shape=(24, 32, 4)):
    rng = np.random.default_rng(seed)
    base = rng.normal(128, 30, shape).cumsum(axis=1) / np.arange(1, shape[1] + 1)[None, :, None]
    return np.clip(base + rng.normal(0, 12, shape), 0, 255).astype(np.uint8)


def test_palette_is_bounded_sorted_and_deterministic():
    image = _latent_image()
    palette = build_palette(image.reshape(-1, 4))
    assert palette.dtype == np.uint8 and palette.shape[1] == 4
    assert len(palette) <= PALETTE_SIZE
    rows = [tuple(row) for row in palette]
    assert rows == sorted(rows) and len(set(rows)) == len(rows)  # lexicographically sorted, no duplicates
    assert np.array_equal(palette, build_palette(image.reshape(-1, 4)))


def test_few_colours_are_kept_exactly():
    colours = np.array([[0, 0, 0, 0], [10, 20, 30, 40], [255, 1, 2, 3]], dtype=np.uint8)
    image = colours[np.random.default_rng(0).integers(0, 3, (8, 8))]
    palette = build_palette(image.reshape(-1, 4))
    assert {tuple(c) for c in palette} == {tuple(c) for c in colours}
    assert np.array_equal(apply_palette(dither(image, palette), palette), image)


def test_nearest_mapping_and_dithering():
    image = _latent_image(1)
    palette = build_palette(image.reshape(-1, 4), size=16)
    plain = dither(image, palette, 0.0)
    dithered = dither(image, palette, 1.0)
    assert plain.max() < len(palette) and dithered.max() < len(palette)
    # plain mapping minimises per-pixel error; dithering preserves local averages better
    err_plain = np.abs(apply_palette(plain, palette).astype(float) - image).mean()
    err_dith = np.abs(apply_palette(dithered, palette).astype(float) - image).mean()
    assert err_plain <= err_dith
    def block_mean(a):
        return a.astype(float).reshape(6, 4, 8, 4, 4).mean(axis=(1, 3))
    bias_plain = np.abs(block_mean(apply_palette(plain, palette)) - block_mean(image)).mean()
    bias_dith = np.abs(block_mean(apply_palette(dithered, palette)) - block_mean(image)).mean()
    assert bias_dith < bias_plain


def test_dither_strength_is_checked():
    with pytest.raises(ValueError):
        dither(_latent_image(), build_palette(_latent_image().reshape(-1, 4)), 1.5)
