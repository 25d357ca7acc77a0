"""Tiling benchmark: what encoding and decoding by overlapping tiles costs in PSNR against whole calls.

python -m bench tiling IMAGES --model M --tiles 64 48 32"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sdlite import images, load_model
from sdlite.tiling import DEFAULT_OVERLAP, tile_layout
from .metrics import psnr


def run(files: list[Path], *, model, tiles: list[int], out_dir: str | Path) -> str:
    loaded = load_model(model)
    inputs = []
    for path in files:
        rgb = images.load_rgb(path)
        inputs.append((rgb, images.to_tensor(images.pad_to_multiple(rgb, loaded.downsample_factor))))
    rows = []
    for tile in [None, *tiles]:
        scores, counts = [], []
        for rgb, tensor in inputs:
            out = images.to_image(loaded.decode(loaded.encode(tensor, tile=tile), tile=tile), rgb.shape[1], rgb.shape[0])
            scores.append(psnr(rgb, np.asarray(out)))
            grid = [side // loaded.downsample_factor for side in tensor.shape[2:]]
            counts.append(1 if tile is None else np.prod([len(tile_layout(side, tile, DEFAULT_OVERLAP)[1]) for side in grid]))
        rows.append({"tile": tile, "tiles_per_image": float(np.mean(counts)), "psnr": float(np.mean(scores))})
    whole = rows[0]["psnr"]
    lines = [f"VAE encode + decode, means over {len(files)} images, overlap >= {DEFAULT_OVERLAP} latent cells", "",
             "| tile (latent cells) | tiles per image | PSNR dB | vs whole dB |", "|---|---|---|---|"]
    for row in rows:
        name = "whole (no tiling)" if row["tile"] is None else str(row["tile"])
        lines.append(f"| {name} | {row['tiles_per_image']:g} | {row['psnr']:.4f} | {row['psnr'] - whole:+.4f} |")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tiling.json").write_text(json.dumps({"model_id": loaded.model_id, "rows": rows}, indent=2) + "\n")
    (out / "tiling.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)
