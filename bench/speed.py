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


def int8_gemm_gops(threads: int, env: dict, side: int = 4096) -> float:
    """onnxruntime's uint8 x int8 matrix product rate (MatMulInteger, the kernel under int8 bundles'
    QLinearConv/MatMul) with `threads` threads, in its own process (best of 3): the int8 counterpart of
    sgemm_gflops, so that int8 rows get a share of what this CPU does in int8."""
    code = f"""
import time, numpy as np, onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
n = {side}
rng = np.random.default_rng(0)
w = numpy_helper.from_array(rng.integers(-127, 128, (n, n), dtype=np.int8), "w")
graph = helper.make_graph([helper.make_node("MatMulInteger", ["a", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("a", TensorProto.UINT8, [n, n])],
                          [helper.make_tensor_value_info("y", TensorProto.INT32, [n, n])], [w])
options = ort.SessionOptions(); options.intra_op_num_threads = {threads}
session = ort.InferenceSession(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(),
                               options, providers=["CPUExecutionProvider"])
a = {{"a": rng.integers(0, 256, (n, n), dtype=np.uint8)}}
session.run(None, a)
best = 1e9
for _ in range(3):
    t = time.perf_counter(); session.run(None, a); best = min(best, time.perf_counter() - t)
print(best)
"""
    seconds = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True).stdout)
    return 2 * side**3 / seconds / 1e9


def _quantized(row: dict) -> str | None:
    """How the network this row ran was quantized ("int8-static-qdq", or its dtype), None for a float one."""
    if row.get("dtype", "fp32") in ("fp32", "fp16"):
        return None
    return (row.get("quantization") or {}).get("method") or row["dtype"]


def _row_label(row: dict) -> str:
    if row["engine"] == "torch":
        return f"torch {row['dtype']}"
    quantized = _quantized(row)
    return f"onnxruntime, {Path(row['bundle']).name}" + (f" ({quantized})" if quantized else "")


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
    if not getattr(args, "no_flops", False):
        torch_extra.append("--flops")
    bundles = [args.bundle, *getattr(args, "also", [])]
    sgemm_start = sgemm_gflops(args.threads, env)
    int8_start = int8_gemm_gops(args.threads, env) if args.torch_device == "cpu" else 0.0
    rows = []
    for stage in stages:
        runs = [("onnxruntime", "bench.engine", ["--bundle", bundle, *ort_extra]) for bundle in bundles]
        for engine, module, source in runs + [("torch", "bench.reference", ["--pipeline", args.pipeline, *torch_extra])]:
            sys.stderr.write(f"{stage} on {engine} {source[1]} ...\n")
            row = _subprocess_json(["-m", module, *source, "--stage", stage, *common], env)
            sys.stderr.write(f"  {_seconds(np.min(row['run_s']))}, load {row['load_s']:.2f} s, peak RSS {row['peak_rss_mb']:.0f} MB\n")
            rows.append(row)
    report = {
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(), "python": platform.python_version()},
        "size": args.size, "threads": args.threads, "repeats": args.repeats,
        "import_sdlite_s": import_time(env), "codec_maths": codec_maths(args.size, max(3, args.repeats)), "stages": rows,
    }
    ort_providers = next(r for r in rows if r["engine"] == "onnxruntime")["providers"]
    on_cpu = ort_providers[0] == "CPUExecutionProvider" and args.torch_device == "cpu"
    # the yardsticks, measured again after the stages: on a shared machine the better of the two readings
    # is the closer one to what the CPU can do
    report["sgemm_gflops"] = max(sgemm_start, sgemm_gflops(args.threads, env))
    report["int8_gemm_gops"] = max(int8_start, int8_gemm_gops(args.threads, env)) if on_cpu else None
    (out / "speed.json").write_text(json.dumps(report, indent=1))
    rates = f"SGEMM (numpy, 4096^2, same threads, better of a reading before and after the stages): {report['sgemm_gflops']:.0f} GFLOP/s"
    if report["int8_gemm_gops"]:
        rates += f"; int8 GEMM (onnxruntime MatMulInteger u8s8, 4096^2): {report['int8_gemm_gops']:.0f} GOP/s"
    lines = [f"Image {args.size}x{getattr(args, 'width', None) or args.size}, {args.threads} threads, best of {args.repeats} after a warm-up; "
             f"onnxruntime on {ort_providers[0]}{' with I/O binding' if getattr(args, 'io_binding', False) else ''}, "
             f"torch on {args.torch_device} ({args.torch_dtype} U-Net). {rates}.", ""]
    if on_cpu:
        lines.append("Rate: the stage's FLOPs (torch's FlopCounterMode, a multiply-add counts 2) over its time; share: that rate over "
                     "the SGEMM rate (float rows) or the int8 GEMM rate (int8 rows) measured above.")
        lines.append("")
    lines += ["| stage | engine | time | torch / this | rate | share | load s | peak RSS MB |", "|---|---|---|---|---|---|---|---|"]
    for stage in stages:
        stage_rows = [r for r in rows if r["stage"] == stage]
        torch_row = next(r for r in stage_rows if r["engine"] == "torch")
        reference, flops = min(torch_row["run_s"]), torch_row.get("flops")
        for row in stage_rows:
            seconds = min(row["run_s"])
            rate = share = "—"
            if flops and on_cpu:
                ceiling = report["int8_gemm_gops"] if _quantized(row) else report["sgemm_gflops"]
                rate, share = f"{flops / seconds / 1e9:.0f} G/s", f"{flops / seconds / 1e9 / ceiling:.0%}"
            lines.append(f"| {stage} | {_row_label(row)} | {_seconds(seconds)} | {reference / seconds:.2f} | {rate} | {share} "
                         f"| {row['load_s']:.2f} | {row['peak_rss_mb']:.0f} |")
    maths = report["codec_maths"]
    lines += ["", f"`import sdlite`: {report['import_sdlite_s'] * 1000:.0f} ms. Codec maths on a {args.size // 8}x{args.size // 8}x4 latent: "
              + ", ".join(f"{m} encode {v['encode_s'] * 1000:.0f} ms / decode {v['decode_s'] * 1000:.0f} ms" for m, v in maths.items())]
    (out / "speed.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)
