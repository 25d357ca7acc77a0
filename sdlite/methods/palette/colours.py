"""A 256-entry palette over 4-channel latent pixels, with Floyd–Steinberg error diffusion (pure numpy).

This replaces the seed's libimagequant (GPL-3) with a permissively licensed equivalent: median-cut
initialisation, a few Lloyd (k-means) iterations, then 4-D Floyd–Steinberg dithering. Only the encoder
runs it; the decoder reads the integer palette and indices from the stream, so decoding is exact.
"""

from __future__ import annotations

import numpy as np

PALETTE_SIZE = 256
"""Entries in the palette (indices fit one byte)."""
KMEANS_ITERATIONS = 8
_CHUNK = 4096  # rows per distance block: bounds memory at _CHUNK * PALETTE_SIZE * channels floats


def _nearest(points: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Index of the nearest palette entry (squared Euclidean) for each row of points."""
    out = np.empty(len(points), dtype=np.int64)
    for start in range(0, len(points), _CHUNK):
        block = points[start : start + _CHUNK, None, :] - palette[None, :, :]
        out[start : start + _CHUNK] = np.einsum("npc,npc->np", block, block).argmin(axis=1)
    return out


def _median_cut(points: np.ndarray, size: int) -> np.ndarray:
    """Deterministic initial palette: split the most spread box at its median until `size` boxes."""
    boxes = [points]
    while len(boxes) < size:
        spreads = [float((b.max(axis=0) - b.min(axis=0)).max()) if len(b) > 1 else -1.0 for b in boxes]
        widest = int(np.argmax(spreads))
        if spreads[widest] <= 0:
            break
        box = boxes.pop(widest)
        channel = int((box.max(axis=0) - box.min(axis=0)).argmax())
        ordered = box[np.argsort(box[:, channel], kind="stable")]
        half = len(ordered) // 2
        boxes += [ordered[:half], ordered[half:]]
    return np.stack([b.mean(axis=0) for b in boxes])


def build_palette(pixels: np.ndarray, size: int = PALETTE_SIZE, iterations: int = KMEANS_ITERATIONS) -> np.ndarray:
    """pixels: (N, C) uint8 -> palette (K, C) uint8 with K <= size, sorted lexicographically."""
    pixels = np.asarray(pixels, dtype=np.uint8)
    unique = np.unique(pixels, axis=0)
    if len(unique) <= size:
        return unique
    points = pixels.astype(np.float32)
    centres = _median_cut(points, size).astype(np.float32)
    for _ in range(iterations):
        labels = _nearest(points, centres)
        counts = np.bincount(labels, minlength=len(centres))
        sums = np.zeros_like(centres, dtype=np.float64)
        np.add.at(sums, labels, points)
        filled = counts > 0
        centres[filled] = (sums[filled] / counts[filled, None]).astype(np.float32)
    palette = np.unique(np.clip(np.rint(centres), 0, 255).astype(np.uint8), axis=0)
    return palette


def dither(image: np.ndarray, palette: np.ndarray, strength: float = 1.0) -> np.ndarray:
    """Map an (H, W, C) uint8 image onto palette indices with Floyd–Steinberg error diffusion.

    strength 0 gives plain nearest-entry mapping; 1 diffuses the full error (the seed's setting).
    """
    if not 0.0 <= strength <= 1.0:
        raise ValueError(f"dither strength must be in [0, 1], got {strength}")
    height, width, _ = image.shape
    pal = palette.astype(np.float32)
    if strength == 0.0:
        return _nearest(image.reshape(-1, image.shape[2]).astype(np.float32), pal).reshape(height, width).astype(np.uint8)
    pal_sq = (pal * pal).sum(axis=1)
    work = np.zeros((height + 1, width + 2, image.shape[2]), dtype=np.float32)
    work[:height, 1 : width + 1] = image
    indices = np.empty((height, width), dtype=np.uint8)
    weights = np.float32(strength) * np.array([7, 3, 5, 1], dtype=np.float32) / np.float32(16)
    for y in range(height):
        row, below = work[y], work[y + 1]
        for x in range(width):
            value = np.clip(row[x + 1], 0.0, 255.0)
            index = int(np.argmin(pal_sq - 2.0 * (pal @ value)))
            indices[y, x] = index
            error = value - pal[index]
            row[x + 2] += weights[0] * error
            below[x] += weights[1] * error
            below[x + 1] += weights[2] * error
            below[x + 2] += weights[3] * error
    return indices


def apply_palette(indices: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Indices (H, W) and palette (K, C) -> (H, W, C) uint8; indices must be < K."""
    return palette[indices]
