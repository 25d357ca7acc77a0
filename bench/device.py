"""Preparing the GPU speed run for a lent device machine (see BENCHMARKS.md, "GPU").

The device image has Python 3.12, torch (CUDA 13) and a CPU onnxruntime, but no diffusers, optimum or
constriction, and transformers 5 (optimum-onnx 0.1.0 needs < 4.58). Nothing can be fetched there, and
one call carries at most 64 MiB, while onnxruntime-gpu's wheel is 255 MB. So:

- here: `python -m bench device-wheels` downloads the wheels into .whl/py/ and splits
  onnxruntime-gpu into .whl/ort-1/ ... (each under CHUNK_BYTES), with its sha256;
- device, one call per chunk: copy the chunk to /tmp/ortparts (the warm machine keeps /tmp);
- device, last call: `python3 -m bench device-install` joins and checks the wheel and installs
  everything into /tmp/site, then the benchmark runs with PYTHONPATH=/tmp/site.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ORT_GPU = "onnxruntime-gpu==1.31.1"
PYTHON_WHEELS = (
    "diffusers==0.39.0",
    "optimum==2.1.0",
    "optimum-onnx==0.1.0",
    "transformers==4.57.6",
    "huggingface_hub==0.36.2",
    "tokenizers==0.22.2",
    "constriction==0.5.0",
    "importlib_metadata==8.7.0",
)
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
CHUNK_BYTES = 60 * 1024 * 1024
DEVICE_PYTHON = "3.12"


def _download(requirement: str, folder: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", DEVICE_PYTHON,
               "--implementation", "cp", "-d", str(folder), requirement]
    for platform in PLATFORMS:
        command[5:5] = ["--platform", platform]
    subprocess.run(command, check=True)


def prepare(out: Path) -> list[Path]:
    """Download and split; returns the folders to carry (ort chunks first, python wheels last)."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    (out / "py").mkdir(parents=True)
    for requirement in PYTHON_WHEELS:
        _download(requirement, out / "py")
    with tempfile.TemporaryDirectory() as folder:
        _download(ORT_GPU, Path(folder))
        (wheel,) = Path(folder).glob("*.whl")
        data = wheel.read_bytes()
    chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]
    folders = []
    for number, chunk in enumerate(chunks, 1):
        folder = out / f"ort-{number}"
        folder.mkdir()
        (folder / f"{wheel.name}.part{number:02d}").write_bytes(chunk)
        folders.append(folder)
    (out / "py" / f"{wheel.name}.sha256").write_text(f"{hashlib.sha256(data).hexdigest()}  {len(chunks)}\n")
    return folders + [out / "py"]


def join_wheel(parts: Path, wheels: Path) -> Path:
    """Reassemble onnxruntime-gpu from its parts and check its sha256 and part count."""
    (record,) = wheels.glob("*.whl.sha256")
    digest, count = record.read_text().split()
    name = record.name[: -len(".sha256")]
    pieces = sorted(parts.glob(f"{name}.part*"))
    if len(pieces) != int(count):
        raise SystemExit(f"expected {count} parts of {name} in {parts}, found {len(pieces)}")
    data = b"".join(p.read_bytes() for p in pieces)
    if hashlib.sha256(data).hexdigest() != digest:
        raise SystemExit(f"{name}: sha256 mismatch after joining {len(pieces)} parts")
    target = parts / name  # beside the parts, never into a carried folder
    target.write_bytes(data)
    return target


def install(parts: Path, wheels: Path, target: Path, *, dry_run: bool = False) -> list[Path]:
    files = [join_wheel(Path(parts), Path(wheels))] + sorted(p for p in Path(wheels).glob("*.whl") if "onnxruntime_gpu" not in p.name)
    if not dry_run:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile", "--upgrade",
                        "--target", str(target), *map(str, files)], check=True)
    return files
