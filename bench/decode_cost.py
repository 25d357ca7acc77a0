"""The costliest streams sdlite is known to accept or refuse, each decoded in a fresh process.

python -m bench decode-cost [--out bench-out/decode-cost]

Each case is a stream built to cost the most for its size (the constructions of issue 19's defects and
the worst that format version 4 allows); a child process runs info() and decompress_latents() (or the
Pillow open and load) on it and reports its time and its own peak RSS (VmHWM). The bound to check:
no stream under 1 kB over 2 s or 500 MB.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

CASES = {
    "v4: 16x256x256 (2048x2048 sd3), every plane coded, table work at its 2^27 limit, symbols nearly free": "max_work",
    "v4: 4x1x65535 (8x524,280 image), every plane coded, table work at its limit, symbols nearly free": "thin",
    "v4: 4x65535x1 (524,280x8 image), the same standing up": "tall",
    "v4: 4x1x65535, a real (random) latent at quality 50 (a large stream)": "thin_real",
    "v4: 16x256x256, every plane coded, empty payload": "empty_payload",
    "v3: 16x128x128 (12,160 coder calls, the most a tiny payload may ask for), symbols nearly free": "legacy_calls",
    "v3: 28 planes with residual ranges at -32768 (issue 19's 73-byte stream)": "legacy_ranges",
    "v3: 8x524,280 image (524,288 coder calls): refused": "legacy_thin",
    "Pillow: a 9000x9000 claim (under Pillow's own limit)": "pillow_claim",
    "v4: a real 2048x2048 sd3 latent at quality 50 (a large stream, for the per-value cost)": "large_real",
}


def _max_work_stream(empty_payload: bool = False, shape=(16, 256, 256), space: int = 3) -> bytes:
    import constriction

    from sdlite import bitstream
    from sdlite.methods.entropy import context, params
    from sdlite.methods.entropy.coder import _group_tables
    from sdlite.methods.entropy.transform import group_shapes

    values = shape[0] * (shape[1] + 1) * (shape[2] + 1)
    half = max(1, min(64, (params.MAX_DECODE_WORK // values) // 2))
    rmin, rmax = -half, half - 1  # the widest alphabet the work limit allows
    sizes = [s[0] for s in group_shapes(shape, 1)]
    planes = [params.PlaneHeader(0, rmin, rmax, 0, 0) for _ in range(sum(sizes))]
    weights = [np.zeros(context.n_weights(p), np.int64) for size in sizes for p in range(size)]
    prm = params.Params(1, (28, 21), 1024, planes, weights, None, 0)
    payload = b""
    if not empty_payload:
        encoder = constriction.stream.queue.RangeEncoder()
        family = constriction.stream.model.Categorical(perfect=False)
        first = 0
        for group_shape in group_shapes(shape, 1):
            size = group_shape[0]
            layout = context.layout(*group_shape[1:], context.BLOCK_SIDE)
            tables, rows = _group_tables(prm, first, size)
            plane_ids, positions, _ = context.schedule(layout, list(range(size)))
            for start in range(0, len(plane_ids), 1 << 14):  # every residual 0, prediction 0, activity bin 0
                n = min(1 << 14, len(plane_ids) - start)
                encoder.encode(np.full(n, -rmin, np.int32), family, np.repeat(tables[rows[0, 0], 0][None], n, axis=0))
            first += size
        payload = encoder.get_compressed().astype("<u4").tobytes()
    header = bitstream.Header(2, "0" * 16, shape[2] * 8, shape[1] * 8, shape, 8, prm.pack(), latent_space=space)
    return bitstream.pack(header, payload)


def _stream(name: str) -> tuple[bytes, str]:
    from sdlite import compress_latents

    if name in ("max_work", "empty_payload"):
        return _max_work_stream(name == "empty_payload"), "latents"
    rng = np.random.default_rng(0)
    if name in ("thin", "tall"):
        return _max_work_stream(shape=(4, 1, 65535) if name == "thin" else (4, 65535, 1), space=1), "latents-large"
    if name == "thin_real":
        z = (rng.normal(0, 3, (4, 1, 65535)).cumsum(axis=2) / 20).astype(np.float32)
        return compress_latents(z, model_id="0" * 16, latent_space="sd1", size=(524280, 8)), "latents-large"
    if name in ("legacy_calls", "legacy_ranges", "legacy_thin"):
        from .fuzz import legacy_entropy_stream

        if name == "legacy_calls":
            return legacy_entropy_stream(16, 128, 128, levels=1, rmin=0, rmax=1, decay=(0, 0)), "latents"
        if name == "legacy_ranges":
            return legacy_entropy_stream(4, 2, 2, levels=2, rmin=-32768, rmax=-32767), "latents"
        return legacy_entropy_stream(4, 1, 65535, levels=1, rmin=0, rmax=1, decay=(0, 0)), "latents-large"
    if name == "pillow_claim":
        from sdlite import bitstream

        header = bitstream.Header(2, "0" * 16, 9000, 9000, (4, 1125, 1125), latent_space=1, params=b"x\x9c\x03\x00\x00\x00\x00\x01")
        return bitstream.pack(header, b""), "pillow"
    z = (rng.normal(0, 0.4, (16, 256, 256)).cumsum(axis=2) / 6).astype(np.float32)
    return compress_latents(z, model_id="0" * 16, latent_space="sd3", quality=50), "latents"


def _child(name: str) -> None:
    """In a fresh process: build the case, decode it, print one JSON line (the building is not timed)."""
    import io

    from sdlite import SdliteError, decompress_latents, info

    data, kind = _stream(name)
    started = time.perf_counter()
    outcome = "decoded"
    try:
        if kind == "pillow":
            from PIL import Image

            import sdlite.pillow  # noqa: F401 - registers SDZ

            with Image.open(io.BytesIO(data)) as image:
                image.load()
        else:
            info(data)
            decompress_latents(data, max_pixels=None if kind == "latents-large" else 2048 * 2048)
    except SdliteError as exc:
        outcome = f"{type(exc).__name__}: {exc}"[:160]
    seconds = time.perf_counter() - started
    peak = next((int(line.split()[1]) // 1024 for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM")), None)
    print(json.dumps({"bytes": len(data), "seconds": seconds, "peak_rss_mb": peak, "outcome": outcome}))


def run(out_dir: Path | None = None) -> str:
    root = Path(__file__).resolve().parent.parent
    rows = []
    for title, name in CASES.items():
        result = subprocess.run([sys.executable, "-c", f"from bench.decode_cost import _child; _child({name!r})"], cwd=root,
                                capture_output=True, text=True, timeout=600)
        line = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else json.dumps({"error": result.stderr[-300:]})
        rows.append({"case": title, **json.loads(line)})
    lines = ["| case | bytes | seconds | peak RSS | outcome |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['case']} | {r.get('bytes')} | {r.get('seconds', float('nan')):.2f} | {r.get('peak_rss_mb')} MB | {r.get('outcome', r.get('error'))} |")
    text = "\n".join(lines)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "decode-cost.json").write_text(json.dumps(rows, indent=1))
        (out_dir / "decode-cost.md").write_text(text + "\n")
        streams = out_dir / "streams"  # the same streams for other decoders (web/bench/decode-cost.mjs times the JavaScript one)
        streams.mkdir(exist_ok=True)
        for name in CASES.values():
            data, kind = _stream(name)
            (streams / f"{name}.sdz").write_bytes(data)
            (streams / f"{name}.json").write_text(json.dumps({"kind": kind, "title": next(t for t, n in CASES.items() if n == name)}))
    return text
