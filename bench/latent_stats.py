"""What the codec measures about a latent space (sdlite.latent_space): channel statistics, the
decorrelating basis of 16-channel spaces, and the coded-scale rule's bits per cell.

python -m bench latent-stats IMAGES --model M [--model M2 ...]
    per model: each channel's mean and standard deviation, the largest correlation between two channels,
    the principal components (as the int16 rows sdlite.latent_space stores) and how far they are from the
    committed basis.

python -m bench scale-rule IMAGES --model M --budgets 2450 3500 5000 7000 10000 14700 --scales 8 9 10 11 12 13 14 16
    codes each image at each budget and each coded scale (the scale byte, eighths), decodes it with the
    model's decoder and records PSNR and LPIPS-alex (cached in OUT/scale-rule.json); then, for each
    candidate bits-per-cell value, how much the rule `scale = sqrt(K / bits per full-size cell)` loses at
    each budget against the best measured scale (LPIPS for generative decoders, PSNR with --metric psnr).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from sdlite import bitstream, images, load_model
from sdlite import latent_space as spaces
from sdlite.methods import entropy
from sdlite.resolution import scale_for_budget

from . import metrics

log = logging.getLogger("bench")

CANDIDATE_BITS_PER_CELL = (5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 18)


def _latents(model, rgb: np.ndarray, scale_byte: int) -> np.ndarray:
    height, width = rgb.shape[:2]
    coded_w, coded_h = bitstream.coded_size(width, height, scale_byte)
    pixels = rgb if (coded_w, coded_h) == (width, height) else images.resize(rgb, coded_w, coded_h)
    return model.encode(images.to_tensor(images.pad_to_multiple(pixels, model.downsample_factor)), tile=None)[0]


def channel_stats(image_paths, model) -> dict:
    """Per-channel mean and std of the encoder's raw latents over the images, the largest off-diagonal
    correlation, and the principal components as int16 rows (BASIS_ONE units, largest entry positive)."""
    model = load_model(model)
    flat = [_latents(model, images.load_rgb(p), bitstream.SCALE_UNIT).reshape(model.latent_channels, -1) for p in image_paths]
    values = np.concatenate(flat, axis=1).astype(np.float64)
    correlation = np.corrcoef(values)
    variances, vectors = np.linalg.eigh(np.cov(values))
    order = np.argsort(variances)[::-1]
    basis = vectors[:, order].T
    basis *= np.where(basis[np.arange(len(basis)), np.abs(basis).argmax(axis=1)] < 0, -1, 1)[:, None]
    rows = np.rint(basis * spaces.BASIS_ONE).astype(int)
    result = {"model": str(model.path), "latent_space": model.info.latent_space_name, "images": len(flat),
              "mean": values.mean(axis=1).round(4).tolist(), "std": values.std(axis=1).round(4).tolist(),
              "max_offdiagonal_correlation": float(np.abs(correlation - np.eye(len(correlation))).max()),
              "component_variances": variances[order].round(5).tolist(), "basis": rows.tolist()}
    committed = model.latent_space.channel_basis if model.latent_space else None
    if committed is not None:
        result["max_difference_from_committed_basis"] = int(np.abs(np.asarray(committed) - rows).max())
    return result


def component_weights(image_paths, model, *, crop: int = 256, sigma: float = 0.3, draws: int = 2, seed: int = 0) -> dict:
    """How much the decoder's pictures depend on each coded component of the space (its basis's components,
    or its channels): Gaussian noise of `sigma` coding units added to one component at a time of each image's
    latents (a centre crop after scaling the short side to 2 * crop), the pixel MSE it adds against the clean
    decode, per unit of noise variance. The committed weights (sdlite.latent_space, COMPONENT_WEIGHT_ONE
    units) are sqrt(sensitivity) over its geometric mean: a flat step in weighted units is then a step per
    component inversely proportional to sqrt(sensitivity), which spreads the decoded error evenly (for
    high-rate quantization, the noise at equal rate falls to the geometric over the arithmetic mean of the
    sensitivities)."""
    import dataclasses

    from sdlite.methods.entropy import channels

    model = load_model(model)
    space = model.latent_space
    plain = dataclasses.replace(channels.for_space(space), weights=None)  # the space's own units and basis, unweighted
    rng = np.random.default_rng(seed)
    added = []
    for path in image_paths:
        rgb = images.load_rgb(path, max_pixels=_PHOTO_PIXELS)  # large photos: only a scaled centre crop is coded
        height, width = rgb.shape[:2]
        shrink = 2 * crop / min(height, width)
        if shrink < 1:
            rgb = images.resize(rgb, max(crop, round(width * shrink)), max(crop, round(height * shrink)))
        top, left = (rgb.shape[0] - crop) // 2, (rgb.shape[1] - crop) // 2
        piece = images.pad_to_multiple(rgb[max(top, 0):max(top, 0) + crop, max(left, 0):max(left, 0) + crop], model.downsample_factor)
        coded = plain.forward(model.encode(images.to_tensor(piece), tile=None)[0])
        clean = model.decode(plain.inverse(coded)[None].astype(np.float32), tile=None)
        row = []
        for k in range(len(coded)):
            errors = []
            for _ in range(draws):
                noisy = coded.copy()
                noisy[k] += rng.normal(0, sigma, noisy[k].shape)
                picture = model.decode(plain.inverse(noisy)[None].astype(np.float32), tile=None)
                errors.append(float(np.mean((picture.astype(np.float64) - clean) ** 2)) / sigma ** 2)
            row.append(float(np.mean(errors)))
        added.append(row)
        log.info("%s: %s", Path(path).name, np.round(row, 4).tolist())
    sensitivity = np.mean(added, axis=0)
    roots = np.sqrt(sensitivity)
    weights = np.rint(roots / np.exp(np.mean(np.log(roots))) * spaces.COMPONENT_WEIGHT_ONE).astype(int)
    result = {"model": str(model.path), "latent_space": space.name, "images": len(added), "crop": crop, "sigma": sigma,
              "sensitivity": [float(f"{v:.4g}") for v in sensitivity], "spread": float(sensitivity.max() / sensitivity.min()),
              "noise_at_equal_rate": float(np.exp(np.mean(np.log(sensitivity))) / sensitivity.mean()), "weights": weights.tolist()}
    if space.component_weights is not None:
        result["max_difference_from_committed_weights"] = int(np.abs(np.asarray(space.component_weights) - weights).max())
    return result


_PHOTO_PIXELS = 64 << 20  # component_weights' inputs: camera photos and wallpapers, bounded


def sweep(image_paths, model, budgets, scales, out_dir: Path, lpips=None) -> dict:
    """{budget: {scale: [bytes, psnr, lpips] mean over the images}}; per-image rows cached in out_dir."""
    model = load_model(model)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache_path = out_dir / "scale-rule.json"
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    space = model.latent_space
    for path in map(Path, image_paths):
        rgb = images.load_rgb(path)
        height, width = rgb.shape[:2]
        for scale_byte in scales:
            latents = None
            for budget in budgets:
                key = f"{model.model_id}|{path.name}|{budget}|{scale_byte}"
                if key in cache:
                    continue
                if latents is None:
                    latents = _latents(model, rgb, scale_byte)
                encoded = entropy.encode(latents, target_bytes=budget, overhead=bitstream.CONTAINER_OVERHEAD, latent_space=space)
                decoded_latents = entropy.decode(encoded.params, encoded.payload, latents.shape, bitstream.FORMAT_VERSION)[None]
                coded_w, coded_h = bitstream.coded_size(width, height, scale_byte)
                picture = images.to_image(model.decode(decoded_latents, tile=None), coded_w, coded_h)
                if (coded_w, coded_h) != (width, height):
                    picture = images.resize_image(picture, width, height)
                decoded = np.asarray(picture)
                cache[key] = [len(encoded.params) + len(encoded.payload) + bitstream.CONTAINER_OVERHEAD, metrics.psnr(rgb, decoded),
                              lpips(rgb, decoded) if lpips is not None else None]
                cache_path.write_text(json.dumps(cache))
                log.info("%s %s budget %d scale %d: %s", model.path.name, path.name, budget, scale_byte, cache[key])
    table = {}
    for budget in budgets:
        for scale_byte in scales:
            rows = [cache[f"{model.model_id}|{Path(p).name}|{budget}|{scale_byte}"] for p in image_paths]
            table.setdefault(budget, {})[scale_byte] = [float(np.mean([r[i] for r in rows])) if rows[0][i] is not None else None
                                                        for i in range(3)]
    return table


def rule_losses(table: dict, cells: int, metric: str = "lpips", candidates=CANDIDATE_BITS_PER_CELL) -> dict:
    """For each candidate bits per cell: the loss at each budget of the rule's scale (the nearest one
    measured) against the best measured scale (LPIPS higher, or PSNR lower, than the best)."""
    index, sign = (2, 1.0) if metric == "lpips" else (1, -1.0)
    out = {}
    for candidate in candidates:
        losses = []
        for budget, by_scale in sorted(table.items()):
            best = min(sign * values[index] for values in by_scale.values())
            wanted = scale_for_budget(8.0 * (budget - bitstream.CONTAINER_OVERHEAD), cells, candidate)
            chosen = min(by_scale, key=lambda s: (abs(s - wanted), s))
            losses.append(sign * by_scale[chosen][index] - best)
        out[candidate] = losses
    return out


def report_rule(table: dict, losses: dict, metric: str) -> str:
    budgets = sorted(table)
    lines = ["| scale byte | " + " | ".join(f"{b} B" for b in budgets) + " |", "|---" * (len(budgets) + 1) + "|"]
    for scale_byte in sorted(next(iter(table.values()))):
        cells = []
        for b in budgets:
            size, psnr, lpips = table[b][scale_byte]
            cells.append(f"{psnr:.2f} / {lpips:.3f}" if lpips is not None else f"{psnr:.2f}")
        lines.append(f"| {scale_byte} | " + " | ".join(cells) + " |")
    lines += ["", f"bits per cell K: mean and largest {metric} loss of the rule against the best measured scale", "",
              "| K | mean | largest | per budget |", "|---|---|---|---|"]
    for candidate, values in losses.items():
        lines.append(f"| {candidate} | {np.mean(values):.4f} | {np.max(values):.4f} | {' '.join(f'{v:.3f}' for v in values)} |")
    return "\n".join(lines)


def codec_speed(image_paths, models, budgets, repeats: int = 3) -> str:
    """The codec maths alone (no network): compress_latents and decompress_latents of each model's real
    latents of the images at each budget, best of `repeats`, means over the images; and each model's
    time against the first model's (sd1's TAESD: 4 channels) at the same bytes."""
    import time

    from sdlite import compress_latents, decompress_latents

    rows = {}
    for model in models:
        loaded = load_model(model)
        latents = [_latents(loaded, images.load_rgb(p), bitstream.SCALE_UNIT) for p in image_paths]
        for budget in budgets:
            encode = decode = 0.0
            for z in latents:
                best_encode = best_decode = float("inf")
                for _ in range(repeats):
                    started = time.perf_counter()
                    data = compress_latents(z, model=loaded, target_bytes=budget)
                    best_encode = min(best_encode, time.perf_counter() - started)
                    started = time.perf_counter()
                    decompress_latents(data)
                    best_decode = min(best_decode, time.perf_counter() - started)
                encode += best_encode / len(latents)
                decode += best_decode / len(latents)
            rows[(loaded.path.name, budget)] = (loaded.latent_channels, encode, decode)
    first = load_model(models[0]).path.name
    lines = ["| model | channels | budget | encode | decode | encode / first | decode / first |", "|---|---|---|---|---|---|---|"]
    for (name, budget), (channels_count, encode, decode) in rows.items():
        base = rows[(first, budget)]
        lines.append(f"| {name} | {channels_count} | {budget} B | {encode * 1000:.0f} ms | {decode * 1000:.0f} ms | "
                     f"{encode / base[1]:.2f} | {decode / base[2]:.2f} |")
    return "\n".join(lines)
