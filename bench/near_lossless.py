"""Latents kept as data: how close sdlite's near-lossless setting stays to the unquantized round trip, and
its bytes against 8-bit latents in lossless JPEG XL (the vaepack approach).

python -m bench near-lossless IMAGES --model M [--model M2 ...] [--out bench-out/near-lossless]

Per model and image: the encoder's latents, the decoder's picture of them (the round trip), and for each
setting the stream's size as a share of vaepack's 8-bit bytes (the scaled latent clipped to +-4, 255
levels, channels in groups of four as lossless JPEG XL images) and the decoded picture's PSNR and
LPIPS-alex minus the round trip's. Means over the images, and the worst image's PSNR change.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sdlite import compress_latents, decompress_latents, images, load_model

from .metrics import psnr
from .quality import vaepack_encode

SETTINGS = {
    "quality 90 (default gains)": {"quality": 90},
    "near_lossless (quality 85, flat gains)": {"near_lossless": True},
    "near_lossless, quality 70": {"near_lossless": True, "quality": 70},
    "near_lossless, quality 80": {"near_lossless": True, "quality": 80},
}


def _picture(model, latents, width, height) -> np.ndarray:
    return np.asarray(images.to_image(model.decode(latents, tile=None), width, height))


def run(files, *, models, out_dir, lpips=None) -> str:
    rows = []
    for name in models:
        model = load_model(name)
        scaling = model.scaling_factor or 1.0
        per = {label: [] for label in SETTINGS}
        for path in files:
            rgb = images.load_rgb(path)
            height, width = rgb.shape[:2]
            latents = model.encode(images.to_tensor(images.pad_to_multiple(rgb, model.downsample_factor)), tile=None)
            reference = _picture(model, latents, width, height)
            base_psnr, base_lpips = psnr(rgb, reference), (lpips(rgb, reference) if lpips else float("nan"))
            z = latents[0]
            vaepack = sum(len(vaepack_encode(z[i:i + 4], scaling, 8)) for i in range(0, z.shape[0], 4))
            for label, options in SETTINGS.items():
                data = compress_latents(z, model=model, **options)
                picture = _picture(model, decompress_latents(data), width, height)
                per[label].append((len(data) / vaepack, psnr(rgb, picture) - base_psnr,
                                   (lpips(rgb, picture) - base_lpips) if lpips else float("nan"), len(data), vaepack))
        for label, values in per.items():
            v = np.array(values)
            rows.append({"model": str(name), "space": model.latent_space_name, "setting": label, "share_of_vaepack": float(v[:, 0].mean()),
                         "psnr_change": float(v[:, 1].mean()), "worst_psnr_change": float(v[:, 1].min()), "lpips_change": float(v[:, 2].mean()),
                         "bytes": float(v[:, 3].mean()), "vaepack_bytes": float(v[:, 4].mean()), "images": len(values)})
    lines = [f"Means over {len(files)} images; changes against the unquantized round trip", "",
             "| model (space) | setting | bytes (share of vaepack 8-bit) | PSNR change (worst image) | LPIPS-alex change |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {Path(r['model']).name} ({r['space']}) | {r['setting']} | {r['bytes']:,.0f} ({100 * r['share_of_vaepack']:.0f} % of "
                     f"{r['vaepack_bytes']:,.0f}) | {r['psnr_change']:+.3f} dB ({r['worst_psnr_change']:+.3f}) | {r['lpips_change']:+.4f} |")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "near-lossless.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "near-lossless.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)
