"""Optimised graphs (python -m export.optimize): fused U-Net attention, same results within tolerance."""

import json
import shutil

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="export extra not installed (pip install -e .[export])")

import sdlite

from .conftest import EXPORT_STACK

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not EXPORT_STACK, reason="export extra not installed (pip install -e .[export])")]


def test_optimised_bundle_decodes_like_the_plain_one(tiny_bundle, tmp_path, photo):
    from export.optimize import OPTIMIZED_FILE, optimize_bundle

    folder = tmp_path / "opt"
    shutil.copytree(tiny_bundle, folder)
    manifest = optimize_bundle(folder)
    unet = manifest["optimization"]["components"]["unet"]
    assert unet["fused"].get("MultiHeadAttention", 0) > 0 and unet["max_abs_diff"] < 1e-3
    assert manifest["components"]["unet"]["file"] == f"unet/{OPTIMIZED_FILE}"
    assert sorted(p.name for p in (folder / "unet").iterdir()) == ["config.json", OPTIMIZED_FILE]  # the unfused graph is gone
    ops = [node.op_type for node in onnx.load(str(folder / "unet" / OPTIMIZED_FILE)).graph.node]
    assert "Attention" not in ops and "Attention" not in unet["fused"]  # self-attention too runs the flash kernel
    assert ops.count("MultiHeadAttention") == unet["fused"]["MultiHeadAttention"]
    assert optimize_bundle(folder)["optimization"]["components"]["unet"]["fused"] == unet["fused"]  # a second run keeps it
    assert manifest["model_id"] == json.loads((tiny_bundle / "manifest.json").read_text())["model_id"]  # same weights, same id
    plain, optimised = sdlite.load_model(tiny_bundle), sdlite.load_model(folder)
    assert optimised.session("unet")._model_path.endswith(OPTIMIZED_FILE)
    data = sdlite.compress(photo, model=plain)
    a = np.asarray(sdlite.decompress(data, model=plain), dtype=np.int16)
    b = np.asarray(sdlite.decompress(data, model=optimised), dtype=np.int16)
    assert np.abs(a - b).max() <= 2  # fused kernels sum in another order


def test_optimise_refuses_what_it_cannot_do(tmp_path, vaelight):
    from export import ExportError
    from export.optimize import main, optimize_bundle

    with pytest.raises(ExportError, match="no manifest.json"):
        optimize_bundle(vaelight.path)
    with pytest.raises(ExportError, match="unknown target"):
        optimize_bundle(vaelight.path, target="tpu")
    assert main([str(vaelight.path)]) == 2


def test_split_self_attention_keeps_the_function():
    """A packed-QKV Attention node becomes three MatMuls and MultiHeadAttention with the same output."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    from export.optimize import split_self_attention

    rng = np.random.default_rng(0)
    width, heads = 16, 2
    weight = rng.normal(0, 0.3, (width, 3 * width)).astype(np.float32)
    bias = rng.normal(0, 0.1, 3 * width).astype(np.float32)
    node = helper.make_node("Attention", ["x", "w", "b"], ["y"], name="attn", domain="com.microsoft", num_heads=heads)
    kept = helper.make_node("Attention", ["x", "w", "b", "mask"], ["z"], name="masked", domain="com.microsoft", num_heads=heads)
    graph = helper.make_graph([node, kept], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 5, width]),
                               helper.make_tensor_value_info("mask", TensorProto.INT32, [1, 5])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5, width]),
                               helper.make_tensor_value_info("z", TensorProto.FLOAT, [1, 5, width])],
                              [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    feed = {"x": rng.normal(0, 1, (1, 5, width)).astype(np.float32), "mask": np.ones((1, 5), np.int32)}
    before = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(["y"], feed)[0]
    assert split_self_attention(model) == 1  # the masked one is not a plain self-attention: left alone
    ops = [n.op_type for n in model.graph.node]
    assert ops == ["MatMul", "MatMul", "MatMul", "MultiHeadAttention", "Attention"]
    assert {i.name for i in model.graph.initializer} >= {"w", "b"}  # the packed weight still feeds the kept node
    after = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(["y"], feed)[0]
    np.testing.assert_allclose(after, before, atol=1e-5)
