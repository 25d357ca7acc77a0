"""Input images -> RGB uint8 arrays, and model tensors <-> pixels (Pillow + numpy; no sessions).

Rules (documented in README):
- Accepted inputs: PIL images, numpy arrays (uint8 or uint16; HxW, HxWx1, HxWx3 or HxWx4), paths, and
  the bytes of an image file. EXIF orientation is applied.
- Grayscale and palette images become RGB; 16-bit images are rounded to 8 bits.
- Alpha: the codec stores colour only. Pixels are composited onto a white background, and a warning is
  issued if any pixel is not fully opaque.
- Sizes: width and height >= MIN_SIDE; width*height <= max_pixels (checked before pixels are decoded);
  Pillow's decompression-bomb refusal becomes InvalidImageError.
- Animated images: the first frame, with a warning.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from .bitstream import DEFAULT_MAX_PIXELS
from .errors import InvalidImageError

MIN_SIDE = 8
ALPHA_BACKGROUND = 255  # white


def _check_size(width: int, height: int, max_pixels: int | None) -> None:
    if width < MIN_SIDE or height < MIN_SIDE:
        raise InvalidImageError(f"image is {width}x{height}; width and height must be at least {MIN_SIDE}")
    if max_pixels is not None and width * height > max_pixels:
        raise InvalidImageError(
            f"image is {width}x{height} = {width * height} pixels, over max_pixels={max_pixels}; "
            "downscale it or pass a larger max_pixels"
        )


def _composite_alpha(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    if alpha.min() < 255:
        warnings.warn(
            "image has transparency: sdlite stores colour only, so it is composited onto white",
            stacklevel=4,
        )
        a = alpha.astype(np.float32)[..., None] / 255.0
        rgb = np.rint(rgb.astype(np.float32) * a + ALPHA_BACKGROUND * (1.0 - a)).astype(np.uint8)
    return rgb


def _from_array(array: np.ndarray, max_pixels: int | None) -> np.ndarray:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise InvalidImageError(f"array must be HxW, HxWx1, HxWx3 or HxWx4, got shape {array.shape}")
    _check_size(array.shape[1], array.shape[0], max_pixels)
    if array.dtype == np.uint16:
        array = np.rint(array.astype(np.float32) / 257.0).astype(np.uint8)
    elif array.dtype != np.uint8:
        raise InvalidImageError(f"array dtype must be uint8 or uint16, got {array.dtype} (scale floats to 0..255 uint8)")
    if array.ndim == 2:
        return np.repeat(array[..., None], 3, axis=2)
    if array.shape[2] == 4:
        return _composite_alpha(array[..., :3], array[..., 3])
    return np.ascontiguousarray(array)


def _from_pil(image: Image.Image, max_pixels: int | None) -> np.ndarray:
    _check_size(*image.size, max_pixels)
    try:
        image = ImageOps.exif_transpose(image)
        mode = image.mode
        if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
            values = np.asarray(image).astype(np.float32)
            scale = 257.0 if values.max(initial=0) > 255 or mode.startswith("I;16") else 1.0
            gray = np.clip(np.rint(values / scale), 0, 255).astype(np.uint8)
            return np.repeat(gray[..., None], 3, axis=2)
        if mode == "F":
            raise InvalidImageError("floating-point (mode F) images are ambiguous; convert to 8-bit first")
        has_alpha = "A" in mode or (mode == "P" and "transparency" in image.info)
        rgba = np.asarray(image.convert("RGBA" if has_alpha else "RGB"))
    except InvalidImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(f"refusing a possible decompression bomb: {exc}") from None
    except Exception as exc:  # Pillow's decoders also raise struct.error, TypeError, IndexError... on broken files
        raise InvalidImageError(f"cannot decode image: {_reason(exc)}") from None
    _check_size(rgba.shape[1], rgba.shape[0], max_pixels)  # EXIF rotation may swap sides
    if rgba.shape[2] == 4:
        return _composite_alpha(rgba[..., :3], rgba[..., 3])
    return np.ascontiguousarray(rgba)


def load_rgb(image, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Any accepted input -> (H, W, 3) uint8 RGB array."""
    if isinstance(image, np.ndarray):
        return _from_array(image, max_pixels)
    if isinstance(image, Image.Image):
        return _from_pil(image, max_pixels)
    if isinstance(image, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(image))
    elif isinstance(image, (str, os.PathLike)):
        source = Path(image)
        if not source.is_file():
            raise InvalidImageError(f"no image file at {source}")
    else:
        raise InvalidImageError(
            f"unsupported image type {type(image).__name__}; pass a PIL image, a numpy array, a path or bytes"
        )
    try:
        opened = Image.open(source)
    except Image.DecompressionBombError as exc:
        raise InvalidImageError(f"refusing a possible decompression bomb: {exc}") from None
    except Exception as exc:  # UnidentifiedImageError, and whatever a plugin's header parser raises
        raise InvalidImageError(f"cannot read image: {_reason(exc)}") from None
    with opened:
        try:
            frames = getattr(opened, "n_frames", 1)
        except Exception as exc:  # counting frames parses the whole file (GIF, TIFF)
            raise InvalidImageError(f"cannot read image: {_reason(exc)}") from None
        if frames > 1:
            warnings.warn(f"the image has {frames} frames; sdlite compresses the first one only", stacklevel=2)
        return _from_pil(opened, max_pixels)


def _reason(exc: BaseException) -> str:
    """OSError and ValueError speak for themselves; other types are named (struct.error, TypeError...)."""
    text = str(exc).strip()
    if isinstance(exc, (OSError, ValueError)) and text:
        return text
    kind = type(exc)
    name = kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
    return f"{name}: {text}"


def pad_to_multiple(rgb: np.ndarray, factor: int) -> np.ndarray:
    """Edge-replicate so both sides are multiples of factor (cropped back after decoding)."""
    height, width = rgb.shape[:2]
    pad_h, pad_w = (-height) % factor, (-width) % factor
    if pad_h or pad_w:
        rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
    return rgb


def to_tensor(rgb: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 -> (1, 3, H, W) float32 in [-1, 1]."""
    return (rgb.astype(np.float32).transpose(2, 0, 1)[None] / np.float32(127.5) - np.float32(1.0)).astype(np.float32)


def resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) uint8 -> (height, width, 3) uint8 with Lanczos filtering (a reduced coding scale)."""
    return np.asarray(Image.fromarray(rgb, "RGB").resize((width, height), Image.LANCZOS))


def resize_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """A decoded image of the coded size back to the original size (Lanczos)."""
    return image.resize((width, height), Image.LANCZOS)


def to_image(sample: np.ndarray, width: int, height: int) -> Image.Image:
    """(1, 3, H', W') float in about [-1, 1] -> PIL RGB, cropped to width x height."""
    pixels = np.clip((np.asarray(sample[0], dtype=np.float32) + 1.0) * 127.5, 0.0, 255.0)
    pixels = np.rint(pixels).astype(np.uint8).transpose(1, 2, 0)[:height, :width]
    return Image.fromarray(np.ascontiguousarray(pixels), "RGB")
