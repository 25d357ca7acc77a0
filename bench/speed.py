"""Speed and memory: each pipeline stage on onnxruntime (sdlite) and on PyTorch (diffusers), same
weights, same thread count, one process per engine and stage, run back to back so ratios compare."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

STAGES = ("encode", "unet", "decode")


def _subprocess_json(args: list[str], env: dict) -> dict:
    result = subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env)
    if result.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def import_time(env: dict, runs: int = 3) -> float:
    code = "import time; t = time.perf_counter(); import sdlite; print(time.perf_counter() - t)"
    return min(float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout) for _ in range(runs))


def codec_maths(size: int, repeats: int) -> dict:
    """Latent codec alone (numpy): quantize + palette + deflate, and the entropy method, both ways."""
    from sdlite import compress_latents, decompress_latents

    z = np.random.default_rng(0).normal(0, 4, (4, size // 8, size // 8)).astype(np.float32)
    out = {}
    for method in ("palette", "entropy"):
        enc, dec = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            data = compress_latents(z, model_id="0" * 16, method=method)
            enc.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            decompress_latents(data)
            dec.append(time.perf_counter() - t0)
        out[method] = {"encode_s": min(enc), "decode_s": min(dec)}
    return out


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value >= 1 else f"{value * 1000:.1f} ms"


def sgemm_gflops(threads: int, env: dict, side: int = 4096) -> float:
    """numpy's float32 matrix product rate with `threads` BLAS threads, in its own process (best of 3)."""
    code = (f"import numpy as np, time; a = np.random.default_rng(0).random(({side}, {side}), dtype=np.float32); b = a.T.copy(); a @ b; "
            f"print(min((lambda t: (a @ b, time.perf_counter() - t)[1])(time.perf_counter()) for _ in range(3)))")
    seconds = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout)
    return 2 * side**3 / seconds / 1e9


def run(args) -> str:
    """Run the benchmark; write speed.json and speed.md into args.out; return the markdown."""
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    root = str(Path(__file__).resolve().parents[1])  # the repository: bench/ and export/ are not installed packages
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""),
               OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    common = ["--size", str(args.size), "--threads", str(args.threads), "--repeats", str(args.repeats)]
    if getattr(args, "width", None):
        common += ["--width", str(args.width)]
    ort_extra = ["--providers", *args.providers] if args.providers else []
    if getattr(args, "io_binding", False):
        ort_extra.append("--io-binding")
    stages = tuple(getattr(args, "stages", None) or STAGES)
    torch_extra = ["--device", args.torch_device, "--dtype", args.torch_dtype]
    rows = []
    for stage in stages:
        for engine, module, source in (("onnxruntime", "bench.engine", ["--bundle", args.bundle, *ort_extra]),
                                       ("torch", "bench.reference", ["--pipeline", args.pipeline, *torch_extra])):
            sys.stderr.write(f"{stage} on {engine} ...\n")
            row = _subprocess_json(["-m", module, *source, "--stage", stage, *common], env)
            sys.stderr.write(f"  {_seconds(np.min(row['run_s']))}, load {row['load_s']:.2f} s, peak RSS {row['peak_rss_mb']:.0f} MB\n")
            rows.append(row)
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()},
        "size": args.size, "threads": args.threads, "repeats": args.repeats,
        "import_sdlite_s": import_time(env), "codec_maths": codec_maths(args.size, max(3, args.repeats)), "stages": rows,
    }
    ort_providers = next(r for r in rows if r["engine"] == "onnxruntime")["providers"]
    report["sgemm_gflops"] = sgemm_gflops(args.threads, env)
    (out / "speed.json").write_text(json.dumps(report, indent=1))
    lines = [f"Image {args.size}x{getattr(args, 'width', None) or args.size}, {args.threads} threads, best of {args.repeats} after a warm-up; "
             f"onnxruntime on {ort_providers[0]}{' with I/O binding' if getattr(args, 'io_binding', False) else ''}, "
             f"torch on {args.torch_device} ({args.torch_dtype} U-Net). SGEMM (numpy, 4096^2, same threads): {report['sgemm_gflops']:.0f} GFLOP/s.", "",
             "| stage | onnxruntime | torch | torch / ORT | ORT load s | torch load s | ORT peak RSS MB | torch peak RSS MB |",
             "|---|---|---|---|---|---|---|---|"]
    for stage in stages:
        ort_row, torch_row = (next(r for r in rows if r["stage"] == stage and r["engine"] == e) for e in ("onnxruntime", "torch"))
        a, b = min(ort_row["run_s"]), min(torch_row["run_s"])
        lines.append(f"| {stage} | {_seconds(a)} | {_seconds(b)} | {b / a:.2f} | {ort_row['load_s']:.2f} | {torch_row['load_s']:.2f} "
                     f"| {ort_row['peak_rss_mb']:.0f} | {torch_row['peak_rss_mb']:.0f} |")
    maths = report["codec_maths"]
    lines += ["", f"`import sdlite`: {report['import_sdlite_s'] * 1000:.0f} ms. Codec maths on a {args.size // 8}x{args.size // 8}x4 latent: "
              + ", ".join(f"{m} encode {v['encode_s'] * 1000:.0f} ms / decode {v['decode_s'] * 1000:.0f} ms" for m, v in maths.items())]
    (out / "speed.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)
