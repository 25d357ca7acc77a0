"""Images per second compressing a folder: one file at a time with every thread in the network, against
several files at once with a thread each (what `sdlite compress DIR --jobs N` does).

python -m bench batch IMAGES --model M [--also BUNDLE[:PROVIDER] ...] [--rounds 2] [--out bench-out/batch]

Each way compresses every image from its file (sdlite.compress, default quality, whole images) into
memory; the ways alternate for `rounds` rounds and the best round of each counts (the machine is shared).
One warm-up compress per way first (session creation). The two ways' streams must be byte-identical.
--also BUNDLE[:PROVIDER] adds a row: that bundle on that provider (cpu, openvino), one file at a time.
"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sdlite
from sdlite import sessions


def _ways(cores: int, also: list) -> list[dict]:
    ways = [{"label": f"one file at a time, {cores} threads", "jobs": 1, "threads": cores, "providers": ["cpu"]}]
    if cores > 1:
        ways.append({"label": f"{cores} files at once, 1 thread each", "jobs": cores, "threads": 1, "providers": ["cpu"]})
    for bundle, providers in also:  # other engines or bundles, one file at a time
        ways.append({"label": f"one file at a time, {cores} threads, {Path(str(bundle)).name} on {providers[0]}", "jobs": 1,
                     "threads": cores, "providers": providers, "bundle": str(bundle)})
    return ways


def _compress_all(files, model, jobs: int) -> list[bytes]:
    if jobs == 1:
        return [sdlite.compress(path, model=model, tile=None) for path in files]
    with ThreadPoolExecutor(jobs) as pool:
        return list(pool.map(lambda path: sdlite.compress(path, model=model, tile=None), files))


def run(files, *, model: str, rounds: int = 2, cores: int | None = None, also=(), out_dir: Path | None = None) -> list[dict]:
    """also: (bundle, providers) pairs measured one file at a time beside the two ways (an int8 bundle, OpenVINO);
    their streams differ from the first row's where their networks do."""
    cores = cores or len(os.sched_getaffinity(0))
    ways = _ways(cores, list(also))
    best = {way["label"]: float("inf") for way in ways}
    streams = {}
    for _ in range(rounds):
        for way in ways:
            sessions.clear_cache()
            loaded = sdlite.load_model(way.get("bundle", model), providers=way["providers"], threads=way["threads"])
            sdlite.compress(files[0], model=loaded, tile=None)  # warm-up
            started = time.perf_counter()
            streams[way["label"]] = _compress_all(files, loaded, way["jobs"])
            best[way["label"]] = min(best[way["label"]], time.perf_counter() - started)
    first = streams[ways[0]["label"]]
    rows = [{**way, "seconds": best[way["label"]], "images_per_second": len(files) / best[way["label"]],
             "speed": best[ways[0]["label"]] / best[way["label"]], "identical": streams[way["label"]] == first,
             "bytes": sum(map(len, streams[way["label"]]))} for way in ways]
    if out_dir:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "batch.json").write_text(json.dumps({"model": str(model), "images": [str(f) for f in files], "rows": rows}, indent=1))
        (out_dir / "batch.md").write_text(table(rows))
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| way | images/s | time | speed | streams as the first row's |", "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['label']} | {r['images_per_second']:.2f} | {r['seconds']:.1f} s | {r['speed']:.2f}x | "
                     f"{'identical' if r['identical'] else 'differ'} |")
    return "\n".join(lines) + "\n"
