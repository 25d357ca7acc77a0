"""CPU engines side by side on real images: onnxruntime's CPU provider (fp32 and int8 bundles), OpenVINO
through onnxruntime's plugin (f32, its own precision choice, int8), and PyTorch.

python -m bench cpu IMAGES --model FP32 [--int8 BUNDLE ...] [--torch DIFFUSERS_FOLDER] [--stage roundtrip|decoder]

stage roundtrip: each row encodes and decodes with its own networks (what a user of that engine gets).
stage decoder: the fp32 bundle's encoder makes every latent once (onnxruntime CPU) and each row decodes it:
the decoders compared on the same input. Per row: the median time per image of the stage (each image
timed `repeats` times, the best counts; one untimed warm-up call first, so OpenVINO's compilation is not
counted), its speed against the first row (onnxruntime CPU fp32), PSNR and LPIPS-alex against the
photo, and the mean and largest absolute pixel difference (0-255 levels) from its twin: the onnxruntime
CPU row of the same networks (fp32 for OpenVINO f32/auto and PyTorch, the int8 bundle for OpenVINO int8). Whole images,
no tiles; every engine gets `threads` threads. One process: the rows are measured one after another in
the same run, so their ratios are comparable.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sdlite import images, load_model

from .metrics import psnr
from .pipeline import best_of

OPENVINO_ROWS = (("OpenVINO f32", {"precision": "f32"}), ("OpenVINO auto", {"precision": "auto"}))


def _rows(model: str, int8: list[str], openvino: bool, torch_folder: str | None) -> list[dict]:
    """Each row names its twin: the onnxruntime CPU row of the same networks, whose pictures it is compared with."""
    first = "onnxruntime CPU fp32"
    rows = [{"label": first, "bundle": model, "providers": ["cpu"], "twin": first}]
    rows += [{"label": f"onnxruntime CPU int8 ({Path(b).name})", "bundle": b, "providers": ["cpu"], "twin": first} for b in int8]
    if openvino:
        rows += [{"label": label, "bundle": model, "providers": [("openvino", options)], "twin": first} for label, options in OPENVINO_ROWS]
        rows += [{"label": f"OpenVINO int8 ({Path(b).name})", "bundle": b, "providers": [("openvino", {"precision": "auto"})],
                  "twin": f"onnxruntime CPU int8 ({Path(b).name})"} for b in int8]
    if torch_folder:
        rows.append({"label": "PyTorch fp32", "torch": torch_folder, "twin": first})
    return rows


class _TorchTiny:
    """diffusers' AutoencoderTiny with the bundle's encode/decode interface (raw latents, pixels in [-1, 1])."""

    def __init__(self, folder: str, threads: int):
        import torch
        from diffusers import AutoencoderTiny

        torch.set_num_threads(threads)
        self.torch = torch
        self.net = AutoencoderTiny.from_pretrained(folder, torch_dtype=torch.float32).eval()

    def encode(self, x, tile=None):
        with self.torch.inference_mode():
            return self.net.encoder(self.torch.from_numpy(x)).numpy()

    def decode(self, z, tile=None):
        with self.torch.inference_mode():
            return self.net.decoder(self.torch.from_numpy(z)).numpy()


def run(files, *, model: str, int8=(), openvino: bool = True, torch_folder: str | None = None, stage: str = "roundtrip",
        threads: int = 2, repeats: int = 2, lpips=None, out_dir: Path | None = None, progress=None) -> list[dict]:
    if stage not in ("roundtrip", "decoder"):
        raise ValueError(f"unknown stage {stage!r}; choose one of: roundtrip, decoder")
    photos = [images.load_rgb(path) for path in files]
    base = load_model(model, providers=["cpu"], threads=threads)
    tensors = [images.to_tensor(images.pad_to_multiple(rgb, base.downsample_factor)) for rgb in photos]
    latents = [base.encode(t, tile=None) for t in tensors] if stage == "decoder" else None
    results, pictures_of = [], {}
    for row in _rows(model, list(int8), openvino, torch_folder):
        net = _TorchTiny(row["torch"], threads) if "torch" in row else load_model(row["bundle"], providers=row["providers"], threads=threads)
        if stage == "decoder":
            def work(i):
                return net.decode(latents[i], tile=None)
        else:
            def work(i):
                return net.decode(net.encode(tensors[i], tile=None), tile=None)
        work(0)  # warm-up: session creation, OpenVINO's compilation
        times, pictures = [], []
        for i, rgb in enumerate(photos):
            seconds, out = best_of(lambda: work(i), repeats)
            times.append(seconds)
            pictures.append(np.asarray(images.to_image(out, rgb.shape[1], rgb.shape[0])))
        pictures_of[row["label"]] = pictures
        twin = pictures_of[row["twin"]]
        result = {"label": row["label"], "twin": row["twin"], "seconds": float(np.median(times)),
                  "psnr": float(np.mean([psnr(p, q) for p, q in zip(photos, pictures)])),
                  "mad_levels": float(np.mean([np.abs(p.astype(np.float64) - q).mean() for p, q in zip(twin, pictures)])),
                  "max_levels": int(max(np.abs(p.astype(np.int16) - q).max() for p, q in zip(twin, pictures)))}
        if lpips is not None:
            result["lpips_alex"] = float(np.mean([lpips(p, q) for p, q in zip(photos, pictures)]))
        if "providers" in row:
            decoder = net.session("vae_decoder").get_providers()[0]
            result["engine"] = decoder
        results.append(result)
        if progress:
            progress(result)
    for result in results:
        result["speed"] = results[0]["seconds"] / result["seconds"]
    if out_dir:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / f"cpu-{stage}.json").write_text(json.dumps({"model": str(model), "stage": stage, "threads": threads,
                                                               "images": [str(f) for f in files], "rows": results}, indent=1))
        (out_dir / f"cpu-{stage}.md").write_text(table(results, stage))
    return results


def table(results: list[dict], stage: str) -> str:
    what = "round trip" if stage == "roundtrip" else "decoder"
    lines = [f"| engine | {what} per image | speed | LPIPS-alex | PSNR | pixels against (MAD, max) |", "|---|---|---|---|---|---|"]
    for r in results:
        lpips = f"{r['lpips_alex']:.4f}" if "lpips_alex" in r else "-"
        lines.append(f"| {r['label']} | {r['seconds']:.3f} s | {r['speed']:.2f}x | {lpips} | {r['psnr']:.2f} dB | "
                     f"{r['twin'] if r['twin'] != r['label'] else 'itself'}: {r['mad_levels']:.3f}, {r['max_levels']} |")
    return "\n".join(lines) + "\n"
