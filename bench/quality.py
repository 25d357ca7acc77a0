"""Rate-distortion benchmark: sdlite methods and peer codecs at equal byte budgets, with PSNR, SSIM,
MS-SSIM, LPIPS-alex and LPIPS-vgg; per model a JSON cache, a markdown table, RD plots, crops and a static
HTML page to look at. Results are cached in the output folder, so an interrupted run resumes where it
stopped.

Rows per image: the unquantized round trip ("autoencoder (unquantized)", the ceiling), the palette
method, the entropy method at its default setting, then at every budget (the palette method's size,
half of it, fractions of it, and bits-per-pixel sweep points) the entropy method at each effort and
the peers (JPEG, WebP, AVIF, JPEG XL) fitted to the same bytes; and the peer SD-latent users try first,
N-bit latents as a lossless JPEG XL image (vaepack-style), at its own sizes.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from sdlite import DecoderNote, compress, decompress, images, load_model
from sdlite.methods.entropy import DEFAULT_QUALITY

from . import metrics, peers
from .trained import models_folder_with

log = logging.getLogger("bench")

CEILING = "autoencoder (unquantized)"
PALETTE = "sdlite palette"
ENTROPY = "sdlite entropy"
DEFAULT_ENTROPY_SETTING = f"quality {DEFAULT_QUALITY} (default)"
CROP_BUDGET = "palette-size"  # the budget whose decoded images the page and the crops show
CROP = 256
METRICS = ("psnr", "ssim", "ms_ssim", "lpips", "lpips_vgg")


def entropy_codec(effort: int) -> str:
    return ENTROPY if effort == 1 else f"{ENTROPY} effort {effort}"


STREAM_SOURCES = ("methods", "bitstream.py", "codec.py", "images.py", "resolution.py", "tiling.py", "model.py", "deflate.py", "scheduler.py",
                  "latent_space.py")
"""The sdlite sources that shape streams and decoded pictures (the rest, e.g. the CLI or the Pillow
plugin, may change without invalidating measured rows)."""


def codec_fingerprint() -> str:
    """Hash of the codec's sources: cached sdlite rows are reused only while they are unchanged."""
    import sdlite

    package = Path(sdlite.__file__).resolve().parent
    digest = hashlib.sha256()
    for name in STREAM_SOURCES:
        paths = sorted((package / name).rglob("*.py")) if (package / name).is_dir() else [package / name]
        for path in paths:
            digest.update(path.relative_to(package).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _is_sdlite(codec: str) -> bool:
    return codec.startswith("sdlite") or codec == CEILING or codec.startswith("vaepack")


DECODERS = ("own", "default")
"""How the sdlite rows are decoded: by the bundle's own decoder, or as decompress(data) with no model decodes
them for a user who has that bundle (the default rule: a decoder trained for the codec where one was trained
for the stream's step, sdlite.registry.choose_decoder)."""


def _trained_fingerprint(space: str) -> str:
    """Identifies the shipped decoder set of a space (its listing and its bands' manifests), '' when it has none."""
    from sdlite import codec_decoders

    trained = codec_decoders.for_space(space)
    if trained is None:
        return ""
    digest = hashlib.sha256((trained.name + "\0").encode())
    for band in trained.bands:
        digest.update(f"{band.name}:{band.min_step}:{band.max_step}\0".encode() + (band.path / "manifest.json").read_bytes())
    return digest.hexdigest()[:16]


class _Cache:
    def __init__(self, path: Path, model_id: str, decoders: str = ""):
        self.path = path
        self.rows: dict[str, dict] = {}
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("model_id") == model_id:
                self.rows = {r["key"]: r for r in saved["rows"]}
        self.model_id = model_id
        # rows decoded by trained decoders are another measurement than the own decoder's: never mixed
        self.fingerprint = codec_fingerprint() + (f"+{decoders}" if decoders else "")

    def get(self, key, metrics_wanted=()):
        row = self.rows.get(key)
        if row is None:
            return None
        if _is_sdlite(row["codec"]) and row.get("fingerprint") != self.fingerprint:
            return None  # sdlite changed since this row was measured
        if row.get("psnr") is not None and any(row.get(m) is None for m in metrics_wanted):
            return None  # a metric asked for now was not measured then
        return row

    def put(self, row: dict) -> dict:
        if _is_sdlite(row["codec"]):
            row["fingerprint"] = self.fingerprint
        self.rows[row["key"]] = row
        self.path.write_text(json.dumps({"model_id": self.model_id, "rows": list(self.rows.values())}, indent=1))
        return row


def vaepack_encode(latents: np.ndarray, scaling_factor: float, bits: int) -> bytes:
    """N-bit uniform quantization of the scaled latent (clipped to +-4), stored as a lossless JPEG XL
    image of C channels (the approach of the PyPI package vaepack)."""
    import io

    import pillow_jxl  # noqa: F401 - registers JXL with Pillow

    levels = 2**bits - 1
    scaled = np.clip(latents * scaling_factor, -4.0, 4.0)
    codes = np.rint((scaled + 4.0) / 8.0 * levels).astype(np.uint8).transpose(1, 2, 0)
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[codes.shape[2]]
    buffer = io.BytesIO()
    Image.fromarray(codes if codes.shape[2] > 1 else codes[..., 0], mode).save(buffer, format="JXL", lossless=True, effort=7)
    return buffer.getvalue()


def vaepack_decode(data: bytes, scaling_factor: float, bits: int) -> np.ndarray:
    import io

    import pillow_jxl  # noqa: F401

    with Image.open(io.BytesIO(data)) as opened:
        codes = np.asarray(opened, dtype=np.float32)
    if codes.ndim == 2:
        codes = codes[..., None]
    return ((codes.transpose(2, 0, 1) / (2**bits - 1) * 8.0 - 4.0) / scaling_factor).astype(np.float32)


def _measure(reference: np.ndarray, decoded: np.ndarray, lpips_nets: dict) -> dict:
    out = {"psnr": metrics.psnr(reference, decoded), "ssim": metrics.ssim(reference, decoded), "ms_ssim": metrics.ms_ssim(reference, decoded)}
    for key, net in lpips_nets.items():
        out[key] = net(reference, decoded)
    return out


def run(image_paths, *, model, out_dir, sweep_bpp=None, palette_fractions=None, efforts=(1,), lpips=None, lpips_vgg=None,
        vaepack_bits=(5, 6, 8), crops=True, with_peers=True, progress=True, decoder="own") -> list[dict]:
    """One model's rows. palette_fractions: extra budgets as fractions of each image's palette-method size
    (e.g. 0.65); efforts: the entropy method's effort levels to measure at every budget; lpips /
    lpips_vgg: bench.lpips.LPIPS instances (None skips that metric); decoder: one of DECODERS (the
    unquantized round trip and vaepack always use the bundle's own decoder)."""
    if decoder not in DECODERS:
        raise ValueError(f"decoder={decoder!r}: choose one of {', '.join(DECODERS)}")
    model = load_model(model)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trained = _trained_fingerprint(model.latent_space_name) if decoder == "default" else ""
    cache = _Cache(out_dir / "results.json", model.model_id, trained)
    lpips_nets = {k: v for k, v in (("lpips", lpips), ("lpips_vgg", lpips_vgg)) if v is not None}
    wanted = tuple(lpips_nets)
    all_peers = peers.available_peers() if with_peers else []
    has_jxl = any(p.format == "JXL" for p in all_peers)
    started = time.perf_counter()
    shown: dict[str, dict] = {}
    for index, path in enumerate(map(Path, image_paths), 1):
        image = Image.fromarray(images.load_rgb(path, max_pixels=None))  # EXIF-rotated, as compress sees it
        reference = np.asarray(image)
        pixels = image.width * image.height
        decoded_for_page: dict[str, np.ndarray] = {}

        def record(codec, setting, budget, make, extra=None, show=False):
            """make() -> (bytes, decoded pixels, extra fields); called only when the row is not cached
            (or its pixels are wanted for the page)."""
            key = f"{path.name}|{codec}|{setting}"
            row = cache.get(key, wanted)
            if row is None or show:
                try:
                    data_len, decoded, made_extra = make()
                except Exception as exc:  # an unreachable budget is a result, not a crash
                    data_len, decoded, made_extra = None, None, {"error": str(exc)}
                if show and decoded is not None:
                    decoded_for_page[codec] = decoded
                if row is None:
                    row = {"key": key, "image": path.name, "codec": codec, "setting": setting, "budget": budget,
                           "bytes": data_len, "bpp": None if data_len is None else 8 * data_len / pixels}
                    if decoded is not None:
                        row.update(_measure(reference, decoded, lpips_nets))
                    row.update(extra or {}, **made_extra)
                    cache.put(row)
            if show:
                shown.setdefault(path.name, {})[codec] = row
            if progress:
                psnr = f"{row.get('psnr') or float('nan'):.2f} dB"
                state = psnr if codec == CEILING else "unreachable" if row["bytes"] is None else f"{row['bytes']} B, {psnr}"
                sys.stderr.write(f"[{index}/{len(image_paths)}] {path.name} {codec} {setting}: {state}\n")
            return row

        def sdlite_row(**options):
            def make():
                stats: dict = {}
                data = compress(image, model=model, stats=stats, **options)
                if trained:
                    with models_folder_with(model.path), warnings.catch_warnings():
                        warnings.simplefilter("ignore", DecoderNote)
                        decoded = decompress(data)
                else:
                    decoded = decompress(data, model=model)
                return len(data), np.asarray(decoded), {"scale": stats.get("scale"), "encode_s": stats.get("seconds")}
            return make

        def ceiling():
            rgb = images.pad_to_multiple(reference, model.downsample_factor)
            return None, np.asarray(images.to_image(model.decode(model.encode(images.to_tensor(rgb))), image.width, image.height)), {}

        record(CEILING, "-", None, ceiling, show=crops)
        palette_bytes = record(PALETTE, "default", None, sdlite_row(method="palette"), show=crops)["bytes"]
        record(ENTROPY, DEFAULT_ENTROPY_SETTING, None, sdlite_row(method="entropy"))
        budgets = [("palette-size", palette_bytes), ("half-palette-size", palette_bytes // 2)]
        budgets += [(f"{fraction:g}x-palette-size", int(fraction * palette_bytes)) for fraction in (palette_fractions or [])]
        budgets += [(f"{bpp:g}bpp", int(bpp * pixels / 8)) for bpp in (sweep_bpp or [])]
        for setting, budget in budgets:
            show = crops and setting == CROP_BUDGET
            for effort in efforts:
                record(entropy_codec(effort), setting, budget, sdlite_row(method="entropy", target_bytes=budget, effort=effort), show=show)
            for peer in all_peers:
                def fit(peer=peer, budget=budget):
                    fitted = peer.fit(image, budget)
                    if fitted is None:
                        return None, None, {"smallest_bytes": peers.smallest(peer, image)}
                    return len(fitted[0]), peer.decode(fitted[0]), {"quality": fitted[1]}
                record(peer.name, setting, budget, fit, show=show)
        if has_jxl and with_peers:
            rgb = images.pad_to_multiple(reference, model.downsample_factor)
            latents = None
            for bits in vaepack_bits:
                def pack(bits=bits):
                    nonlocal latents
                    if latents is None:
                        latents = model.encode(images.to_tensor(rgb))[0]
                    data = vaepack_encode(latents, model.scaling_factor, bits)
                    decoded = model.decode(vaepack_decode(data, model.scaling_factor, bits)[None])
                    return len(data), np.asarray(images.to_image(decoded, image.width, image.height)), {}
                record(f"vaepack {bits}-bit", "own size", None, pack)
        if crops and decoded_for_page:
            save_crops(reference, decoded_for_page, out_dir / "crops" / path.stem)
    log.info("quality benchmark finished in %.1f s", time.perf_counter() - started)
    names = {Path(p).name for p in image_paths}
    rows = [r for r in cache.rows.values() if r["image"] in names]
    write_reports(rows, out_dir, title=f"{model.path.name} ({model.model_id})")
    if crops:
        write_page(rows, shown, out_dir, title=f"{model.path.name} ({model.model_id})")
    return rows


def _crop_box(reference: np.ndarray) -> tuple[int, int]:
    height, width = reference.shape[:2]
    return max(0, (height - CROP) // 2), max(0, (width - CROP) // 2)


def _file_name(codec: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in codec).strip("-") + ".png"


def save_crops(reference: np.ndarray, decoded: dict, folder: Path) -> None:
    """Centre crops (CROP x CROP) of the original and of each codec's decoded image, one PNG each."""
    folder.mkdir(parents=True, exist_ok=True)
    top, left = _crop_box(reference)
    for name, pixels in [("original", reference)] + list(decoded.items()):
        tile = np.ascontiguousarray(pixels[top : top + CROP, left : left + CROP])
        Image.fromarray(tile).save(folder / _file_name(name))


def write_page(rows: list[dict], shown: dict, out_dir: Path, *, title: str) -> Path:
    """index.html: per image, crops of the original and of each codec at the palette method's bytes with
    their bytes and metrics, then the RD plot and the summary table. Opens from the folder in a browser."""
    parts = [f"<!doctype html><meta charset='utf-8'><title>sdlite quality: {html.escape(title)}</title>",
             "<style>body{font-family:sans-serif;margin:1em}figure{display:inline-block;margin:4px;font-size:12px;width:260px;"
             "vertical-align:top}img{image-rendering:pixelated;width:256px;height:256px}table{border-collapse:collapse;font-size:12px}"
             "td,th{border:1px solid #ccc;padding:2px 6px}</style>",
             f"<h1>sdlite quality: {html.escape(title)}</h1>",
             "<p>Centre crops (256x256) of each image at the palette method's byte count; under each, bytes and metrics of the whole "
             "image. The originals are unaltered crops of the Kodak images (see ../shared/data/kodak/SOURCES.txt for credits).</p>",
             "<p><img src='rd.png' style='width:auto;height:auto;max-width:100%'></p>"]
    for image_name in sorted(shown):
        stem = Path(image_name).stem
        parts.append(f"<h2>{html.escape(image_name)}</h2><figure><img src='crops/{stem}/original.png'><figcaption>original</figcaption></figure>")
        for codec, row in shown[image_name].items():
            if not (out_dir / "crops" / stem / _file_name(codec)).is_file():
                continue
            figures = ", ".join(f"{label} {row[key]:.3f}" for key, label in (("psnr", "PSNR"), ("ms_ssim", "MS-SSIM"), ("lpips", "LPIPS-alex"),
                                                                             ("lpips_vgg", "LPIPS-vgg")) if row.get(key) is not None)
            size = "unquantized" if row["bytes"] is None else f"{row['bytes']} B ({row['bpp']:.3f} bpp)"
            parts.append(f"<figure><img src='crops/{stem}/{_file_name(codec)}'><figcaption><b>{html.escape(codec)}</b><br>{size}<br>"
                         f"{figures}</figcaption></figure>")
    parts.append("<h2>Means over the images</h2>" + _html_table(summarise(rows)))
    page = out_dir / "index.html"
    page.write_text("\n".join(parts) + "\n")
    return page


def _html_table(summary: list[dict]) -> str:
    head = "<tr>" + "".join(f"<th>{h}</th>" for h in ("codec", "budget", "images", "bytes", "bpp", "PSNR", "SSIM", "MS-SSIM", "LPIPS-alex", "LPIPS-vgg")) + "</tr>"
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (s["codec"], s["setting"], f"{s['images']}/{s['of']}", _fmt(s["bytes"], 0),
                                                                 _fmt(s["bpp"], 4), _fmt(s["psnr"], 2), _fmt(s["ssim"], 3), _fmt(s["ms_ssim"], 3),
                                                                 _fmt(s["lpips"], 3), _fmt(s["lpips_vgg"], 3))) + "</tr>"
        for s in summary
    )
    return f"<table>{head}{body}</table>"


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
            **{k: _mean([m.get(k) for m in made]) for k in ("bytes", "bpp", *METRICS)},
        })
    order = {CEILING: 0, PALETTE: 1}

    def key(s):
        return (s["setting"] not in ("-", "default", DEFAULT_ENTROPY_SETTING, "own size"), s["setting"], order.get(s["codec"], 2 if s["codec"].startswith(ENTROPY) else 9), s["codec"])

    return sorted(summary, key=key)


def _fmt(value, digits):
    return "—" if value is None else f"{value:.{digits}f}"


def write_reports(rows: list[dict], out_dir: Path, *, title: str = "") -> None:
    summary = summarise(rows)
    lines = ["| codec | budget | images | bytes | bpp | PSNR dB | SSIM | MS-SSIM | LPIPS-alex | LPIPS-vgg |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summary:
        lines.append(
            f"| {s['codec']} | {s['setting']} | {s['images']}/{s['of']} | {_fmt(s['bytes'], 0)} | {_fmt(s['bpp'], 4)} | {_fmt(s['psnr'], 2)} "
            f"| {_fmt(s['ssim'], 3)} | {_fmt(s['ms_ssim'], 3)} | {_fmt(s['lpips'], 3)} | {_fmt(s['lpips_vgg'], 3)} |"
        )
    (out_dir / "summary.md").write_text("\n".join(lines) + "\n")
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    plot(summary, out_dir / "rd.png", title=title)


def plot(summary: list[dict], path: Path, *, title: str = "") -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (pip install -e .[bench]): no RD plot")
        return
    panels = [m for m in ("psnr", "ms_ssim", "lpips", "lpips_vgg") if any(s[m] is not None for s in summary)]
    figure, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 4.5), squeeze=False)
    codecs = sorted({s["codec"] for s in summary if s["codec"] != CEILING})
    labels = {"psnr": "PSNR (dB), higher is better", "ms_ssim": "MS-SSIM, higher is better",
              "lpips": "LPIPS-alex, lower is better", "lpips_vgg": "LPIPS-vgg, lower is better"}
    for metric, axis in zip(panels, axes[0]):
        for codec in codecs:
            points = sorted((s["bpp"], s[metric]) for s in summary
                            if s["codec"] == codec and s["bpp"] and s[metric] is not None and s["images"] == s["of"])
            if points:
                axis.plot(*zip(*points), marker="o", markersize=3, label=codec, linestyle="-" if len(points) > 1 else "none")
        ceiling = [s[metric] for s in summary if s["codec"] == CEILING and s[metric] is not None]
        if ceiling:
            axis.axhline(ceiling[0], color="grey", linestyle="--", label=CEILING)
        axis.set_xlabel("bits per pixel")
        axis.set_ylabel(labels[metric])
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    if title:
        figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


PUBLISHED = [
    # (codec, bpp, PSNR dB, LPIPS-alex): published on the whole Kodak set (24 images), not measured here
    ("MS-ILLM (published)", 0.044, 24.73, 0.158),
    ("MS-ILLM (published)", 0.081, 25.92, 0.110),
    ("MS-ILLM (published)", 0.153, 27.53, 0.073),
    ("HiFiC (published)", 0.183, 27.56, 0.069),
]
PUBLISHED_CEILINGS = [("SD 2.1 VAE round trip (published)", 26.65, 0.073)]
"""Reference points from the literature, drawn apart from the measured curves (marked 'published')."""


def _sweep_points(summary: list[dict], codec: str, metric: str) -> list[tuple[float, float]]:
    return sorted((s["bpp"], s[metric]) for s in summary
                  if s["codec"] == codec and s["setting"].endswith("bpp") and s["bpp"] and s[metric] is not None and s["images"] == s["of"])


def best_by_rate(by_model: dict[str, list[dict]], metric: str = "lpips") -> list[tuple[str, str, float]]:
    """Per sweep budget: (budget, the model whose entropy stream scored best, its value)."""
    budgets: dict[str, list] = {}
    for name, summary in by_model.items():
        for s in summary:
            if s["codec"] == ENTROPY and s["setting"].endswith("bpp") and s[metric] is not None and s["images"] == s["of"]:
                budgets.setdefault(s["setting"], []).append((s[metric], name))
    sign = 1 if metric == "lpips" else -1
    return [(setting, min(values, key=lambda v: sign * v[0])[1], min(values, key=lambda v: sign * v[0])[0])
            for setting, values in sorted(budgets.items(), key=lambda kv: float(kv[0].removesuffix("bpp")))]


def compare_spaces(by_model: dict[str, list[dict]], out_dir: Path, *, decoder: str = "own") -> str:
    """One table and one plot for several models (latent spaces): each one's entropy curve over the bpp
    sweep and its unquantized round trip, the peers (from whichever model's run measured them), and the
    published reference points; decoder: how the sdlite rows were decoded (DECODERS), said in the plot.
    Returns the markdown written to out_dir/spaces.md."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summaries = {name: summarise(rows) for name, rows in by_model.items()}
    settings = sorted({s["setting"] for summary in summaries.values() for s in summary if s["setting"].endswith("bpp")},
                      key=lambda k: float(k.removesuffix("bpp")))
    lines = ["| budget | " + " | ".join(f"{name} bpp / PSNR / LPIPS" for name in summaries) + " | best (LPIPS) |",
             "|---" * (len(summaries) + 2) + "|"]
    best = dict((setting, (name, value)) for setting, name, value in best_by_rate(summaries))
    for setting in settings:
        cells = []
        for summary in summaries.values():
            row = next((s for s in summary if s["codec"] == ENTROPY and s["setting"] == setting), None)
            cells.append("—" if row is None else f"{_fmt(row['bpp'], 3)} / {_fmt(row['psnr'], 2)} / {_fmt(row['lpips'], 3)}")
        winner = best.get(setting)
        lines.append(f"| {setting} | " + " | ".join(cells) + f" | {winner[0] if winner else '—'} |")
    ceilings = ["| round trip (unquantized) | " + " | ".join(
        next((f"— / {_fmt(s['psnr'], 2)} / {_fmt(s['lpips'], 3)}" for s in summary if s["codec"] == CEILING), "—") for summary in summaries.values()) + " | |"]
    peer_rows = []
    peer_names = sorted({s["codec"] for summary in summaries.values() for s in summary if s["codec"] in ("JPEG", "WebP", "AVIF", "JPEG XL")})
    for peer in peer_names:
        for setting in settings:
            row = next((s for summary in summaries.values() for s in summary if s["codec"] == peer and s["setting"] == setting), None)
            if row is not None and row["images"]:
                peer_rows.append(f"| {peer} {setting} ({row['images']}/{row['of']}) | {_fmt(row['bpp'], 3)} / {_fmt(row['psnr'], 2)} / {_fmt(row['lpips'], 3)} |")
    published = [f"| {name} | {bpp} / {psnr} / {lp} |" for name, bpp, psnr, lp in PUBLISHED]
    published += [f"| {name} | — / {psnr} / {lp} |" for name, psnr, lp in PUBLISHED_CEILINGS]
    text = "\n".join(lines + ceilings + ["", "| peer, budget (images it reached) | bpp / PSNR / LPIPS |", "|---|---|"] + peer_rows
                     + ["", "| published, not measured here (whole Kodak set) | bpp / PSNR / LPIPS |", "|---|---|"] + published)
    (out_dir / "spaces.md").write_text(text + "\n")
    (out_dir / "spaces.json").write_text(json.dumps({name: summary for name, summary in summaries.items()}, indent=1))
    _plot_spaces(summaries, peer_names, out_dir / "spaces.png", decoder=decoder)
    return text


def _plot_spaces(summaries: dict[str, list[dict]], peer_names: list[str], path: Path, *, decoder: str = "own") -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log.warning("matplotlib is not installed (pip install -e .[bench]): no plot")
        return
    figure, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (metric, label), axis in zip((("lpips", "LPIPS-alex, lower is better"), ("psnr", "PSNR (dB), higher is better")), axes):
        for i, (name, summary) in enumerate(summaries.items()):
            colour = colours[i % len(colours)]
            points = _sweep_points(summary, ENTROPY, metric)
            if points:
                axis.plot(*zip(*points), marker="o", markersize=3, color=colour, label=f"sdlite, {name}")
            ceiling = next((s[metric] for s in summary if s["codec"] == CEILING and s[metric] is not None), None)
            if ceiling is not None:
                axis.axhline(ceiling, color=colour, linestyle=":", linewidth=1, label=f"{name} round trip")
        peer_colours = ("tab:gray", "tab:brown", "tab:olive", "tab:cyan")
        for j, peer in enumerate(peer_names):
            points = next((_sweep_points(summary, peer, metric) for summary in summaries.values() if _sweep_points(summary, peer, metric)), [])
            if points:
                axis.plot(*zip(*points), marker="s", markersize=2, linestyle="--", color=peer_colours[j % len(peer_colours)], label=peer)
        index = 3 if metric == "lpips" else 2
        for marker, name in zip(("*", "P"), sorted({p[0] for p in PUBLISHED})):
            points = [(p[1], p[index]) for p in PUBLISHED if p[0] == name]
            axis.plot(*zip(*points), marker=marker, markersize=9, linestyle="none", color="black", label=name)
        for name, psnr, lp in PUBLISHED_CEILINGS:
            axis.axhline(lp if metric == "lpips" else psnr, color="black", linestyle="-.", linewidth=0.8, label=name)
        axis.set_xscale("log")
        axis.set_xlabel("bits per pixel (log scale)")
        axis.set_ylabel(label)
        axis.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7, ncol=2)
    count = len(summaries)
    decoded_by = "" if decoder == "own" else "\nstreams decoded by the default rule: the decoders trained for the codec where they have a band"
    figure.suptitle(f"sdlite with {count} TAE decoders, Kodak kodim01-12; black markers: published, not measured here{decoded_by}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
