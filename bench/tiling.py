"""Tiling benchmark: what encoding and decoding by overlapping tiles costs in PSNR against whole calls.

python -m bench tiling IMAGES --model M --tiles 64 48 32 [--no-split]

Per tile size: PSNR of the round trip against the image, and PSNR of the tiled round trip against the whole
one (the seams: how far tiles change the computation). --no-split tiles networks with whole-map norms
(TAEF2) as if sdlite.split did not exist, to measure what the split buys."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from unittest import mock

from sdlite import images, load_model, split
from sdlite.tiling import DEFAULT_OVERLAP, tile_layout
from .metrics import psnr


def run(files: list[Path], *, model, tiles: list[int], out_dir: str | Path, use_split: bool = True) -> str:
    if not use_split:
        with mock.patch.object(split, "split_for_tiles", lambda path, component: None):
            return run(files, model=model, tiles=tiles, out_dir=out_dir)
    loaded = load_model(model)
    inputs = []
    for path in files:
        rgb = images.load_rgb(path)
        inputs.append((rgb, images.to_tensor(images.pad_to_multiple(rgb, loaded.downsample_factor))))
    rows, wholes = [], []
    for tile in [None, *tiles]:
        scores, seams, counts = [], [], []
        for index, (rgb, tensor) in enumerate(inputs):
            out = np.asarray(images.to_image(loaded.decode(loaded.encode(tensor, tile=tile), tile=tile), rgb.shape[1], rgb.shape[0]))
            scores.append(psnr(rgb, out))
            if tile is None:
                wholes.append(out)
            else:
                seams.append(psnr(wholes[index], out))
            grid = [side // loaded.downsample_factor for side in tensor.shape[2:]]
            counts.append(1 if tile is None else np.prod([len(tile_layout(side, tile, DEFAULT_OVERLAP)[1]) for side in grid]))
        rows.append({"tile": tile, "tiles_per_image": float(np.mean(counts)), "psnr": float(np.mean(scores)),
                     "psnr_against_whole": float(np.mean(seams)) if seams else None})
    whole = rows[0]["psnr"]
    lines = [f"VAE encode + decode, means over {len(files)} images, overlap >= {DEFAULT_OVERLAP} latent cells", "",
             "| tile (latent cells) | tiles per image | PSNR dB | vs whole dB | tiled against whole, PSNR dB |", "|---|---|---|---|---|"]
    for row in rows:
        name = "whole (no tiling)" if row["tile"] is None else str(row["tile"])
        seam = "-" if row["psnr_against_whole"] is None else f"{row['psnr_against_whole']:.2f}"
        lines.append(f"| {name} | {row['tiles_per_image']:g} | {row['psnr']:.4f} | {row['psnr'] - whole:+.4f} | {seam} |")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tiling.json").write_text(json.dumps({"model_id": loaded.model_id, "rows": rows}, indent=2) + "\n")
    (out / "tiling.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)
