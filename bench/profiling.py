"""Where compress and decompress spend their time: networks, codec maths, image I/O, the rest (Python).

python -m bench profile IMAGES --model M [--model M2 ...] [--threads 2] [--out bench-out/profile]

Each image is compressed from its file (sdlite.compress) and the stream decompressed and saved as PNG
(what `sdlite decompress` does), once untimed, then once under cProfile. Each category is the cumulative
time of its entry functions (ENTRIES), an entry called from inside another entry counted once (by the
outer one); "Python and the rest" is the remainder of the wall time: argument checks, array copies and
everything between the entries. Whole images (tile=None), onnxruntime CPU, the default quality.
"""

from __future__ import annotations

import cProfile
import io
import json
import pstats
from pathlib import Path

import numpy as np

import sdlite

CATEGORIES = ("networks", "codec maths", "image I/O")
# (category, a piece of the file name, function name): the cumulative time of these calls makes the category
ENTRIES = (
    ("networks", "onnxruntime_inference_collection.py", "run"),
    *(("codec maths", "sdlite/methods/", name) for name in ("encode", "decode")),
    ("codec maths", "sdlite/resolution.py", "choose_scale"),
    *(("codec maths", "sdlite/bitstream.py", name) for name in ("pack", "unpack")),
    *(("image I/O", "sdlite/images.py", name) for name in ("load_rgb", "to_tensor", "to_image", "resize", "resize_image", "pad_to_multiple")),
    ("image I/O", "PIL/Image.py", "save"),
)

def _category(function) -> str | None:
    filename, _, name = function
    filename = filename.replace("\\", "/")
    for category, piece, entry in ENTRIES:
        if name == entry and piece in filename:
            return category
    return None


def split(stats: pstats.Stats, wall: float) -> dict:
    """Seconds per category from a profile: entries' cumulative times, nested entries left out."""
    table = stats.stats  # function -> (primitive calls, calls, own time, cumulative time, callers)
    entries = {f for f in table if _category(f)}

    def inside_another_entry(function) -> bool:
        seen, todo = set(), list(table[function][4])
        while todo:
            caller = todo.pop()
            if caller in seen:
                continue
            seen.add(caller)
            if caller in entries and caller != function:
                return True
            if caller in table:
                todo.extend(table[caller][4])
        return False

    seconds = dict.fromkeys(CATEGORIES, 0.0)
    for function in entries:
        if not inside_another_entry(function):
            seconds[_category(function)] += table[function][3]
    seconds["Python and the rest"] = wall - sum(seconds.values())  # about -0.1 % when the profiler's own cost lands in an entry
    return seconds


def _profiled(call) -> tuple[dict, float]:
    import time

    profile = cProfile.Profile()
    started = time.perf_counter()
    profile.enable()
    call()
    profile.disable()
    wall = time.perf_counter() - started
    return split(pstats.Stats(profile, stream=io.StringIO()), wall), wall


def run(files, *, models, threads: int = 2, out_dir: Path | None = None) -> list[dict]:
    rows = []
    for name in models:
        model = sdlite.load_model(name, providers=["cpu"], threads=threads)
        for operation in ("compress", "decompress"):
            parts, walls = [], []
            for path in files:
                data = sdlite.compress(path, model=model, tile=None)

                def call(data=data, path=path):
                    if operation == "compress":
                        sdlite.compress(path, model=model, tile=None)
                    else:
                        sdlite.decompress(data, model=model, tile=None).save(io.BytesIO(), format="PNG")
                call()  # untimed: first-call costs
                seconds, wall = _profiled(call)
                parts.append(seconds)
                walls.append(wall)
            mean_wall = float(np.mean(walls))
            shares = {k: float(np.mean([p[k] for p in parts])) for k in parts[0]}
            rows.append({"model": Path(str(name)).name, "operation": operation, "seconds": mean_wall, "parts": shares})
    if out_dir:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "profile.json").write_text(json.dumps({"threads": threads, "images": [str(f) for f in files], "rows": rows}, indent=1))
        (out_dir / "profile.md").write_text(table(rows))
    return rows


def table(rows: list[dict]) -> str:
    heads = [*CATEGORIES, "Python and the rest"]
    lines = ["| model | operation | per image | " + " | ".join(heads) + " |", "|---|---|---|" + "---|" * len(heads)]
    for r in rows:
        cells = [f"{r['parts'][h]:.3f} s ({100 * r['parts'][h] / r['seconds']:.1f} %)" for h in heads]
        lines.append(f"| {r['model']} | {r['operation']} | {r['seconds']:.3f} s | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
