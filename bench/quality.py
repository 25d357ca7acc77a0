"""Rate-distortion benchmark: sdlite methods and peer codecs at equal byte budgets, with PSNR, SSIM,
MS-SSIM and LPIPS-alex; JSON, a markdown table, RD plots and side-by-side crops. Results are cached
in the output folder, so an interrupted run resumes where it stopped."""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from sdlite import compress, decompress, images, load_model
from sdlite.methods.entropy import DEFAULT_QUALITY
from . import metrics, peers

log = logging.getLogger("bench")

CEILING = "autoencoder (unquantized)"
PALETTE = "sdlite palette"
ENTROPY = "sdlite entropy"
DEFAULT_ENTROPY_SETTING = f"quality {DEFAULT_QUALITY} (default)"
CROP = 256


def codec_fingerprint() -> str:
    """Hash of sdlite's sources: cached sdlite rows are reused only while they are unchanged."""
    import hashlib

    import sdlite

    package = Path(sdlite.__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        if path.name not in ("cli.py", "__main__.py"):
            digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


class _Cache:
    def __init__(self, path: Path, model_id: str):
        self.path = path
        self.rows: dict[str, dict] = {}
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("model_id") == model_id:
                self.rows = {r["key"]: r for r in saved["rows"]}
        self.model_id = model_id
        self.fingerprint = codec_fingerprint()

    def get(self, key):
        row = self.rows.get(key)
        if row is not None and row["codec"] in (PALETTE, ENTROPY) and row.get("fingerprint") != self.fingerprint:
            return None  # sdlite changed since this row was measured
        return row

    def put(self, row: dict) -> dict:
        if row["codec"] in (PALETTE, ENTROPY):
            row["fingerprint"] = self.fingerprint
        self.rows[row["key"]] = row
        self.path.write_text(json.dumps({"model_id": self.model_id, "rows": list(self.rows.values())}, indent=1))
        return row


def _measure(reference: np.ndarray, decoded: np.ndarray, lpips) -> dict:
    return {
        "psnr": metrics.psnr(reference, decoded),
        "ssim": metrics.ssim(reference, decoded),
        "ms_ssim": metrics.ms_ssim(reference, decoded),
        "lpips": lpips(reference, decoded) if lpips else None,
    }


def run(image_paths, *, model, out_dir, sweep_bpp=None, palette_fractions=None, lpips=None, crops=True, progress=True) -> list[dict]:
    """palette_fractions: extra budgets as fractions of each image's palette-method size (e.g. 0.65)."""
    model = load_model(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = _Cache(out_dir / "results.json", model.model_id)
    all_peers = peers.available_peers()
    started = time.perf_counter()
    for index, path in enumerate(map(Path, image_paths), 1):
        image = Image.open(path).convert("RGB")
        reference = np.asarray(image)
        pixels = image.width * image.height
        decoded_for_crops = {}

        def record(codec, setting, budget, data_len, decoded, extra=None):
            key = f"{path.name}|{codec}|{setting}"
            row = cache.get(key)
            if row is None:
                row = {"key": key, "image": path.name, "codec": codec, "setting": setting, "budget": budget,
                       "bytes": data_len, "bpp": None if data_len is None else 8 * data_len / pixels}
                row.update(_measure(reference, decoded, lpips) if decoded is not None else {})
                row.update(extra or {})
                cache.put(row)
            if progress:
                shown = "unreachable" if row["bytes"] is None else f"{row['bytes']} B, {row.get('psnr', float('nan')):.2f} dB"
                sys.stderr.write(f"[{index}/{len(image_paths)}] {path.name} {codec} {setting}: {shown}\n")
            return row

        if cache.get(f"{path.name}|{CEILING}|-") is None:
            rgb = images.pad_to_multiple(reference, model.downsample_factor)
            ceiling = images.to_image(model.decode(model.encode(images.to_tensor(rgb))), image.width, image.height)
            record(CEILING, "-", None, None, np.asarray(ceiling))
        else:
            record(CEILING, "-", None, None, None)
        palette_key = f"{path.name}|{PALETTE}|default"
        if cache.get(palette_key) is None or crops:
            data = compress(image, model=model, method="palette")
            palette_decoded = np.asarray(decompress(data, model=model))
            decoded_for_crops[PALETTE] = palette_decoded
            record(PALETTE, "default", None, len(data), palette_decoded)
        palette_bytes = cache.get(palette_key)["bytes"]
        default_key = f"{path.name}|{ENTROPY}|{DEFAULT_ENTROPY_SETTING}"
        if cache.get(default_key) is None:  # what compress(..., method="entropy") gives with no rate option
            data = compress(image, model=model, method="entropy")
            record(ENTROPY, DEFAULT_ENTROPY_SETTING, None, len(data), np.asarray(decompress(data, model=model)))
        else:
            record(ENTROPY, DEFAULT_ENTROPY_SETTING, None, None, None)
        budgets = [("palette-size", palette_bytes), ("half-palette-size", palette_bytes // 2)]
        budgets += [(f"{bpp:g}bpp", int(bpp * pixels / 8)) for bpp in (sweep_bpp or [])]
        budgets += [(f"{fraction:g}x-palette-size", int(fraction * palette_bytes)) for fraction in (palette_fractions or [])]
        for setting, budget in budgets:
            want_crop = crops and setting == "palette-size"
            if cache.get(f"{path.name}|{ENTROPY}|{setting}") is None or want_crop:
                try:
                    data = compress(image, model=model, method="entropy", target_bytes=budget)
                    decoded = np.asarray(decompress(data, model=model))
                    if want_crop:
                        decoded_for_crops[ENTROPY] = decoded
                    record(ENTROPY, setting, budget, len(data), decoded)
                except Exception as exc:  # an unreachable budget is a result, not a crash
                    record(ENTROPY, setting, budget, None, None, {"error": str(exc)})
            else:
                record(ENTROPY, setting, budget, None, None)
            for peer in all_peers:
                key = f"{path.name}|{peer.name}|{setting}"
                if cache.get(key) is not None and not want_crop:
                    record(peer.name, setting, budget, None, None)
                    continue
                fitted = peer.fit(image, budget)
                if fitted is None:
                    record(peer.name, setting, budget, None, None, {"smallest_bytes": peers.smallest(peer, image)})
                    continue
                decoded = peer.decode(fitted[0])
                if want_crop:
                    decoded_for_crops[peer.name] = decoded
                record(peer.name, setting, budget, len(fitted[0]), decoded, {"quality": fitted[1]})
        if crops and decoded_for_crops:
            side_by_side(reference, decoded_for_crops, out_dir / "crops" / f"{path.stem}.png", palette_bytes)
    log.info("quality benchmark finished in %.1f s", time.perf_counter() - started)
    rows = [r for r in cache.rows.values() if r["image"] in {Path(p).name for p in image_paths}]
    write_reports(rows, out_dir)
    return rows


def side_by_side(reference: np.ndarray, decoded: dict, path: Path, budget: int) -> None:
    height, width = reference.shape[:2]
    top, left = max(0, (height - CROP) // 2), max(0, (width - CROP) // 2)
    tiles = [("original", reference)] + list(decoded.items())
    canvas = Image.new("RGB", (CROP * len(tiles), CROP + 16), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (name, pixels) in enumerate(tiles):
        canvas.paste(Image.fromarray(np.ascontiguousarray(pixels[top : top + CROP, left : left + CROP])), (i * CROP, 16))
        draw.text((i * CROP + 4, 2), name if name == "original" else f"{name} (<= {budget} B)", fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def _mean(values):
    values = [v for v in values if v is not None and np.isfinite(v)]
    return float(np.mean(values)) if values else None


def summarise(rows: list[dict]) -> list[dict]:
    """Means per (codec, setting) over images where that codec produced a file."""
    groups: dict[tuple, list] = {}
    for row in rows:
        groups.setdefault((row["codec"], row["setting"]), []).append(row)
    summary = []
    for (codec, setting), members in groups.items():
        made = [m for m in members if m["bytes"] is not None or codec == CEILING]
        summary.append({
            "codec": codec, "setting": setting, "images": len(made), "of": len(members),
            **{k: _mean([m.get(k) for m in made]) for k in ("bytes", "bpp", "psnr", "ssim", "ms_ssim", "lpips")},
        })
    order = {CEILING: 0, PALETTE: 1, ENTROPY: 2}
    return sorted(summary, key=lambda s: (s["setting"] != "-", s["setting"], order.get(s["codec"], 9), s["codec"]))


def _fmt(value, digits):
    return "—" if value is None else f"{value:.{digits}f}"


def write_reports(rows: list[dict], out_dir: Path) -> None:
    summary = summarise(rows)
    lines = ["| codec | budget | images | bytes | bpp | PSNR dB | SSIM | MS-SSIM | LPIPS-alex |", "|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        made = f"{s['images']}/{s['of']}"
        lines.append(
            f"| {s['codec']} | {s['setting']} | {made} | {_fmt(s['bytes'], 0)} | {_fmt(s['bpp'], 4)} | {_fmt(s['psnr'], 2)} "
            f"| {_fmt(s['ssim'], 3)} | {_fmt(s['ms_ssim'], 3)} | {_fmt(s['lpips'], 3)} |"
        )
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    plot(summary, out_dir / "rd.png")


def plot(summary: list[dict], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (pip install -e .[bench]): no RD plot")
        return
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    codecs = sorted({s["codec"] for s in summary if s["codec"] != CEILING})
    for metric, axis in zip(("psnr", "lpips"), axes):
        for codec in codecs:
            points = sorted((s["bpp"], s[metric]) for s in summary if s["codec"] == codec and s["bpp"] and s[metric] is not None and s["images"] == s["of"])
            if points:
                axis.plot(*zip(*points), marker="o", label=codec)
        ceiling = [s[metric] for s in summary if s["codec"] == CEILING and s[metric] is not None]
        if ceiling:
            axis.axhline(ceiling[0], color="grey", linestyle="--", label=CEILING)
        axis.set_xlabel("bits per pixel")
        axis.set_ylabel({"psnr": "PSNR (dB), higher is better", "lpips": "LPIPS-alex, lower is better"}[metric])
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
