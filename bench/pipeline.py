"""End-to-end times of the codec on real images: compress, decompress, and preview decoding with another
model of the same latent space, next to the bare onnxruntime encoder and decoder calls they wrap.

python -m bench pipeline IMAGES --model ../shared/models/taesd --model ../shared/models/vaelight [--threads 2]

Per model (all in this process, warm sessions, best of --repeats per image, then the mean over images):
the VAE encoder and decoder sessions alone, compress() at the default setting (or at --bpp), decompress(), and the
share of compress + decompress spent outside the network calls (codec maths and glue). That share is
measured inside the same calls: every session.run of the model is timed, and what compress and
decompress spend around those runs is the outside time, so machine noise between separate runs does
not enter it. Then, for each ordered pair of models, decompress(data of the first, preview=the second).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from sdlite import compress, decompress, images, load_model


def best_of(call, repeats: int) -> tuple[float, object]:
    """(the best time of `repeats` calls, the last call's result)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = call()
        best = min(best, time.perf_counter() - t0)
    return best, result


def _best(call, repeats: int) -> float:
    return best_of(call, repeats)[0]


class _TimedSession:
    """An InferenceSession stand-in that adds the time of every run() to a shared clock."""

    def __init__(self, session, clock: list):
        self._session, self._clock = session, clock

    def run(self, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return self._session.run(*args, **kwargs)
        finally:
            self._clock[0] += time.perf_counter() - t0

    def __getattr__(self, name):
        return getattr(self._session, name)


def _best_outside(call, clock: list, repeats: int) -> tuple[float, float]:
    """(total, time outside the network runs) of the fastest of `repeats` calls."""
    best = None
    for _ in range(repeats):
        clock[0] = 0.0
        t0 = time.perf_counter()
        call()
        total = time.perf_counter() - t0
        if best is None or total < best[0]:
            best = (total, total - clock[0])
    return best


def run(image_paths, *, models, threads: int | None = None, repeats: int = 3, out_dir=None, bpp: float | None = None) -> str:
    loaded = [load_model(m, threads=threads) for m in models]
    rgbs = [images.load_rgb(p) for p in image_paths]
    rows, streams = [], {}
    for model in loaded:
        tensors = [images.to_tensor(images.pad_to_multiple(rgb, model.downsample_factor)) for rgb in rgbs]
        latents = [model.encode(t) for t in tensors]  # warm-up and the decoder's inputs
        model.decode(latents[0])
        encoder = np.mean([_best(lambda t=t: model.encode(t), repeats) for t in tensors])
        decoder = np.mean([_best(lambda z=z: model.decode(z), repeats) for z in latents])
        clock = [0.0]
        timed = load_model(model.path, threads=threads,
                           session_overrides={c: _TimedSession(model.session(c), clock) for c in ("vae_encoder", "vae_decoder")})

        def options(rgb):  # the default setting, or a rate (--bpp)
            return {} if bpp is None else {"target_bytes": max(60, round(bpp * rgb.shape[0] * rgb.shape[1] / 8))}

        data = [compress(rgb, model=timed, **options(rgb)) for rgb in rgbs]
        streams[model.path] = data
        comp = [_best_outside(lambda rgb=rgb: compress(rgb, model=timed, **options(rgb)), clock, repeats) for rgb in rgbs]
        decomp = [_best_outside(lambda d=d: decompress(d, model=timed), clock, repeats) for d in data]
        network = sum(t - o for t, o in comp + decomp)
        rows.append({"model": model.path.name, "encoder_s": encoder, "decoder_s": decoder,
                     "compress_s": float(np.mean([t for t, _ in comp])), "decompress_s": float(np.mean([t for t, _ in decomp])),
                     "compress_outside_s": float(np.mean([o for _, o in comp])), "decompress_outside_s": float(np.mean([o for _, o in decomp])),
                     "bytes": float(np.mean([len(d) for d in data])), "glue_share": sum(o for _, o in comp + decomp) / network})
    previews = []
    for source in loaded:
        for target in loaded:
            if source is target or source.latent_space != target.latent_space:
                continue
            seconds = np.mean([_best(lambda d=d: decompress(d, preview=target), repeats) for d in streams[source.path]])
            previews.append({"encoded_with": source.path.name, "preview": target.path.name, "decompress_s": seconds})
    size = "x".join(str(s) for s in rgbs[0].shape[1::-1])
    lines = [f"{len(rgbs)} images ({size} first), {threads or 'default'} threads, best of {repeats} per image, means over the images.", "",
             f"| model | VAE encoder alone | VAE decoder alone | compress ({'default' if bpp is None else f'{bpp:g} bpp'}) | decompress | of which outside the networks | "
             "outside / network time | bytes |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['encoder_s']:.3f} s | {r['decoder_s']:.3f} s | {r['compress_s']:.3f} s | {r['decompress_s']:.3f} s "
                     f"| {r['compress_outside_s']:.3f} s + {r['decompress_outside_s']:.3f} s | {100 * r['glue_share']:.1f} % | {r['bytes']:.0f} |")
    if previews:
        lines += ["", "| stream encoded with | decoded with preview= | decompress |", "|---|---|---|"]
        lines += [f"| {p['encoded_with']} | {p['preview']} | {p['decompress_s']:.3f} s |" for p in previews]
    text = "\n".join(lines)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "pipeline.json").write_text(json.dumps({"rows": rows, "previews": previews, "threads": threads, "repeats": repeats}, indent=1))
        (out / "pipeline.md").write_text(text + "\n")
    return text
