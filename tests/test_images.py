import io

import numpy as np
import pytest
from PIL import Image

from sdlite import InvalidImageError
from sdlite.images import load_rgb, pad_to_multiple, to_image, to_tensor


def test_accepts_pil_array_path_and_bytes(tmp_path, photo):
    path = tmp_path / "a.png"
    Image.fromarray(photo).save(path)
    for source in (Image.fromarray(photo), photo, path, str(path), path.read_bytes()):
        assert np.array_equal(load_rgb(source), photo)


def test_grayscale_palette_and_16_bit():
    gray = np.arange(64 * 10, dtype=np.uint8).reshape(10, 64)
    assert np.array_equal(load_rgb(Image.fromarray(gray)), np.repeat(gray[..., None], 3, axis=2))
    assert np.array_equal(load_rgb(gray), np.repeat(gray[..., None], 3, axis=2))
    pal = Image.fromarray(gray).convert("P")
    assert load_rgb(pal).shape == (10, 64, 3)
    sixteen = (gray.astype(np.uint16) * 257)
    buffer = io.BytesIO()
    Image.fromarray(sixteen).save(buffer, format="PNG")
    assert np.array_equal(load_rgb(buffer.getvalue())[..., 0], gray)
    assert np.array_equal(load_rgb(sixteen)[..., 1], gray)


def test_alpha_is_composited_on_white_with_a_warning():
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[0, 0] = [0, 0, 0, 0]  # fully transparent black becomes white
    with pytest.warns(UserWarning, match="transparency"):
        out = load_rgb(Image.fromarray(rgba, "RGBA"))
    assert out[0, 0].tolist() == [255, 255, 255] and out[1, 1].tolist() == [0, 0, 0]


def test_opaque_alpha_is_silent(recwarn):
    rgba = np.full((8, 8, 4), 255, dtype=np.uint8)
    load_rgb(rgba)
    assert not recwarn.list


def test_exif_orientation_is_applied():
    image = Image.fromarray(np.zeros((10, 20, 3), dtype=np.uint8))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", exif=exif)
    assert load_rgb(buffer.getvalue()).shape == (20, 10, 3)


@pytest.mark.parametrize(
    "bad, message",
    [
        (np.zeros((7, 100, 3), np.uint8), "at least 8"),
        (np.zeros((10, 10, 3), np.float32), "dtype"),
        (np.zeros((10, 10, 2), np.uint8), "shape"),
        (b"not an image", "cannot read"),
        (12345, "unsupported image type"),
        ("/no/such/file.png", "no image file"),
    ],
)
def test_bad_inputs_name_the_problem(bad, message):
    with pytest.raises(InvalidImageError, match=message):
        load_rgb(bad)


def test_max_pixels_is_enforced_before_decoding():
    big = Image.new("RGB", (300, 300))
    with pytest.raises(InvalidImageError, match="max_pixels=10000"):
        load_rgb(big, max_pixels=10_000)
    assert load_rgb(big, max_pixels=None).shape == (300, 300, 3)


def test_pad_crop_and_tensor_range(photo):
    padded = pad_to_multiple(photo, 8)
    assert padded.shape == (48, 72, 3)
    assert np.array_equal(padded[:45, :70], photo) and np.array_equal(padded[47, 71], photo[44, 69])
    tensor = to_tensor(padded)
    assert tensor.shape == (1, 3, 48, 72) and tensor.min() >= -1 and tensor.max() <= 1
    back = to_image(tensor, 70, 45)
    assert back.size == (70, 45) and np.array_equal(np.asarray(back), photo)
