"""Run a network over overlapping tiles of a latent-grid array and blend the pieces (pure numpy).

SD's VAE and U-Net hold full attention matrices: their memory grows with the square of the latent
area (a 2048x2048 image would need tens of GB). Tiling keeps every call at or below one tile; where
tiles overlap, their outputs are averaged with weights that ramp linearly across the overlap, so no
seam is a hard edge. Tiles see only their own region, so a network with global statistics (the VAE's
group norms, attention) gives slightly different values near the seams than one whole call would.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .errors import OptionError
from .logs import progress_log

DEFAULT_TILE = 96  # latent cells (768 px with SD): images up to this size run in one call, as before
DEFAULT_OVERLAP = 16  # latent cells shared by neighbouring tiles (128 px with SD)


def check_tile(tile: int | None, multiple: int = 1) -> None:
    if tile is None:
        return
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)) or tile < 2 * DEFAULT_OVERLAP or tile % multiple:
        raise OptionError(
            f"tile must be None (never tile) or an integer number of latent cells >= {2 * DEFAULT_OVERLAP}"
            + (f" and a multiple of {multiple}" if multiple > 1 else "")
            + f", got {tile!r}"
        )


def tile_layout(length: int, tile: int, overlap: int, multiple: int = 1) -> tuple[int, list[int]]:
    """(size, starts) of the fewest tiles of at most `tile` cells that cover 0..length with neighbours
    sharing at least `overlap` cells. The tiles are made as small as that allows (a multiple of
    `multiple`), so an input just over one tile costs little more than one whole call."""
    if length <= tile:
        return length, [0]
    gaps = -(-(length - tile) // (tile - overlap))
    size = -(-(length + gaps * overlap) // (gaps + 1))
    size = min(tile, -(-size // multiple) * multiple)
    return size, [round(i * (length - size) / gaps) for i in range(gaps + 1)]


def _ramp(start: int, size: int, total: int, overlap: int) -> np.ndarray:
    """Blend weights along one axis of a tile, in output units: linear over the overlap at inner edges."""
    weights = np.ones(size)
    rise = (np.arange(overlap) + 0.5) / overlap
    if start > 0:
        weights[:overlap] = np.minimum(weights[:overlap], rise)
    if start + size < total:
        weights[size - overlap :] = np.minimum(weights[size - overlap :], rise[::-1])
    return weights


def run_tiled(
    run: Callable[[np.ndarray], np.ndarray],
    source: np.ndarray,
    *,
    cell_in: int,
    cell_out: int,
    tile: int | None,
    overlap: int = DEFAULT_OVERLAP,
    multiple: int = 1,
) -> np.ndarray:
    """Apply `run` to (1, C, H, W) `source` whose grid cells are cell_in x cell_in values, by tiles.

    run maps a (1, C, h * cell_in, w * cell_in) piece to (1, C', h * cell_out, w * cell_out); tile sides
    are multiples of `multiple` cells when the source's are. With tile None, or a source no larger than
    one tile, this is run(source)."""
    grid_h, grid_w = source.shape[2] // cell_in, source.shape[3] // cell_in
    if tile is None or (grid_h <= tile and grid_w <= tile):
        return run(source)
    out = weight = None
    size_h, starts_y = tile_layout(grid_h, tile, overlap, multiple)
    size_w, starts_x = tile_layout(grid_w, tile, overlap, multiple)
    count, done = len(starts_y) * len(starts_x), 0
    for y0 in starts_y:
        for x0 in starts_x:
            done += 1
            progress_log.info("%s: tile %d of %d", getattr(run, "__name__", "network"), done, count)
            piece = run(source[:, :, y0 * cell_in : (y0 + size_h) * cell_in, x0 * cell_in : (x0 + size_w) * cell_in])
            if out is None:
                out = np.zeros(piece.shape[:2] + (grid_h * cell_out, grid_w * cell_out), dtype=np.float64)
                weight = np.zeros(out.shape[2:])
            blend = np.outer(
                _ramp(y0 * cell_out, size_h * cell_out, grid_h * cell_out, overlap * cell_out),
                _ramp(x0 * cell_out, size_w * cell_out, grid_w * cell_out, overlap * cell_out),
            )
            rows = slice(y0 * cell_out, (y0 + size_h) * cell_out)
            cols = slice(x0 * cell_out, (x0 + size_w) * cell_out)
            out[:, :, rows, cols] += piece * blend
            weight[rows, cols] += blend
    return (out / weight).astype(np.float32)
