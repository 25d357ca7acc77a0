"""Optimised graphs in a bundle: onnxruntime's transformer fusions, done once and stored.

python -m export.optimize BUNDLE [--components unet vae_decoder vae_encoder] [--target cpu|cuda]

onnxruntime's stable-diffusion optimizer (onnxruntime.transformers, model types "unet" and "vae") fuses
attention into its MultiHeadAttention contrib op (whose CPU kernel does not materialise the whole
attention matrix; self-attention, which the optimizer makes a packed-QKV Attention node, is split back
into three projections feeding MultiHeadAttention for the cpu target: see split_self_attention),
LayerNorm / SkipLayerNorm / Gelu chains into single kernels, and folds constants.
Fusions that only CUDA implements (GroupNorm, NhwcConv, BiasSplitGelu, BiasAdd, packed QKV) are used
for --target cuda only, so a cpu-target bundle runs on both providers. The optimised graph is written
beside the original (model.opt.onnx, with external data for the U-Net), checked against it on random
inputs, and the manifest then names it; the model id stays (same weights, same function).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sdlite import manifest as manifests

from .cli_support import run_task
from .errors import ExportError, ValidationError

log = logging.getLogger("export")

OPTIMIZED_FILE = "model.opt.onnx"
TARGETS = ("cpu", "cuda")
MODEL_TYPES = {"unet": "unet", "vae_encoder": "vae", "vae_decoder": "vae"}  # sdlite.manifest.COMPONENTS -> optimizer model type
CHECK_ATOL = {"fp32": 2e-3, "fp16": 5e-2}  # relative to max(1, max |output|), as the export's validation


def _patch_num_heads() -> None:
    """onnxruntime 1.32's FusionAttentionUnet.get_num_heads calls int() on a one-element array, which numpy
    2.4 refuses; read the element instead (same result, same rules). The optimizer imports its fusion
    modules under two names, so both are patched."""
    import importlib
    import sys as _sys

    import onnxruntime.transformers.optimizer  # noqa: F401 - puts its folder on sys.path, where it imports fusions by bare name

    modules = [importlib.import_module(name) for name in ("onnxruntime.transformers.fusion_attention_unet", "fusion_attention_unet")
               if name in _sys.modules or importlib.util.find_spec(name)]

    def get_num_heads(self, reshape_q, is_torch2: bool = False) -> int:
        value = None
        if is_torch2:
            parent = self.model.get_parent(reshape_q, 1)
            if parent and parent.op_type == "Concat" and len(parent.input) == 4:
                value = self.model.get_constant_value(parent.input[2])
        else:
            shape = self.model.get_constant_value(reshape_q.input[1])
            if isinstance(shape, np.ndarray) and list(shape.shape) == [4]:
                value = shape[2:3]
        if isinstance(value, np.ndarray) and value.size == 1 and int(value.reshape(-1)[0]) > 0:
            return int(value.reshape(-1)[0])
        return 0

    for module in modules:
        module.FusionAttentionUnet.get_num_heads = get_num_heads


def fusion_options(model_type: str, target: str):
    from onnxruntime.transformers.fusion_options import FusionOptions

    options = FusionOptions(model_type)
    options.use_multi_head_attention = True
    if target == "cpu":
        for cuda_only in ("enable_group_norm", "enable_skip_group_norm", "enable_nhwc_conv", "enable_bias_splitgelu",
                          "enable_packed_qkv", "enable_packed_kv", "enable_bias_add"):
            setattr(options, cuda_only, False)
    return options


SPLITTABLE_ATTENTION_ATTRIBUTES = {"num_heads", "scale", "mask_filter_value"}


def split_self_attention(model) -> int:
    """Rewrite each self-attention that the fusion made a com.microsoft Attention node (one packed Q|K|V
    weight) as three MatMuls feeding MultiHeadAttention, in place; return how many were rewritten.

    Why: onnxruntime's CPU Attention kernel materialises the whole softmax(QK^T) matrix (8 heads x 4096^2
    floats = 537 MB at SD's 64x64 latents), while MultiHeadAttention with separate Q, K, V runs its
    tiled flash kernel. Same weights, same bias, same scale: the function does not change."""
    from onnx import helper, numpy_helper

    graph = model.graph
    initializers = {init.name: init for init in graph.initializer}
    consumers: dict[str, int] = {}
    for node in graph.node:
        for name in node.input:
            consumers[name] = consumers.get(name, 0) + 1
    rewritten, nodes = 0, []
    for node in graph.node:
        attributes = {a.name for a in node.attribute}
        weight = initializers.get(node.input[1]) if len(node.input) > 1 else None
        if (node.op_type != "Attention" or node.domain != "com.microsoft" or len(node.input) != 3 or len(node.output) != 1
                or not attributes <= SPLITTABLE_ATTENTION_ATTRIBUTES or weight is None or len(weight.dims) != 2
                or weight.dims[1] % 3 or node.input[2] not in initializers):
            nodes.append(node)
            continue
        packed = numpy_helper.to_array(weight)
        projections = []
        for label, part in zip("qkv", np.split(packed, 3, axis=1)):
            name = f"{node.name}_{label}"
            graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(part), f"{name}_weight"))
            nodes.append(helper.make_node("MatMul", [node.input[0], f"{name}_weight"], [f"{name}_out"], name=f"{name}_MatMul"))
            projections.append(f"{name}_out")
        mha = helper.make_node("MultiHeadAttention", projections + [node.input[2]], list(node.output),
                               name=f"{node.name}_mha", domain="com.microsoft")
        mha.attribute.extend(node.attribute)
        nodes.append(mha)
        if consumers.get(weight.name) == 1:
            graph.initializer.remove(weight)
        rewritten += 1
    del graph.node[:]
    graph.node.extend(nodes)
    return rewritten


def _random_feed(session, latent_side: int = 8) -> dict:
    from sdlite.bundle import ONNX_DTYPES

    rng = np.random.default_rng(0)
    feed = {}
    for spec in session.get_inputs():
        dtype = ONNX_DTYPES.get(spec.type, np.float32)
        if spec.name == "timestep":
            feed[spec.name] = np.array(40, dtype=dtype).reshape([1] * len(spec.shape))
        elif spec.name == "encoder_hidden_states":
            width = spec.shape[-1] if isinstance(spec.shape[-1], int) else 768
            feed[spec.name] = rng.normal(0, 1, (1, 77, width)).astype(dtype)
        elif spec.name == "sample" and spec.shape[1] == 3:
            feed[spec.name] = rng.uniform(-1, 1, (1, 3, 8 * latent_side, 8 * latent_side)).astype(dtype)
        else:
            channels = spec.shape[1] if isinstance(spec.shape[1], int) else 4
            feed[spec.name] = rng.normal(0, 1, (1, channels, latent_side, latent_side)).astype(dtype)
    return feed


def _check(original: Path, optimized: Path, dtype: str) -> float:
    import onnxruntime as ort

    plain = ort.InferenceSession(str(original), providers=["CPUExecutionProvider"])
    fused = ort.InferenceSession(str(optimized), providers=["CPUExecutionProvider"])
    feed = _random_feed(plain)
    expected = np.asarray(plain.run(None, feed)[0], dtype=np.float32)
    got = np.asarray(fused.run(None, feed)[0], dtype=np.float32)
    diff = float(np.max(np.abs(got - expected)))
    tolerance = CHECK_ATOL[dtype] * max(1.0, float(np.max(np.abs(expected))))
    if not diff <= tolerance:
        raise ValidationError(f"{original.parent.name}: the optimised graph differs from the original by {diff:.3g} (tolerance {tolerance:.3g})")
    return diff


def optimize_bundle(bundle, *, components=None, target: str = "cpu", keep_original: bool = False, progress=None) -> dict:
    """Optimise the bundle's components and return the manifest. The work is done on a hard-linked copy that
    replaces the bundle whole once every optimised graph checks out; the original graphs are then dropped
    unless keep_original (a full SD U-Net is 3.4 GB twice)."""
    from onnxruntime.transformers.optimizer import optimize_model

    from sdlite.bundle import read_bundle
    from sdlite.manifest import MANIFEST

    if target not in TARGETS:
        raise ExportError(f"unknown target {target!r}; choose one of: {', '.join(TARGETS)}")
    _patch_num_heads()
    folder = Path(bundle)
    info = read_bundle(folder)
    if info.manifest is None:
        raise ExportError(f"{folder} has no manifest.json: optimise a bundle made by python -m export (not a plain optimum folder)")
    if info.quantization:
        raise ExportError(f"{folder} is quantized ({info.quantization.get('method')}); optimise the float bundle, then quantize it")
    manifest = json.loads((folder / MANIFEST).read_text())
    wanted = [c for c in (components or sorted(info.components)) if c in info.components]
    # Work on a copy and swap it in whole: a failure leaves the bundle as it was. Components left alone are
    # hard links (no bytes copied); those being optimised are copied, as onnx refuses external data with
    # several links (a possible hard-link attack).
    bundle_folder, folder = folder, Path(tempfile.mkdtemp(prefix=f".{folder.name}.optimizing-", dir=folder.parent))
    try:
        shutil.copytree(bundle_folder, folder, copy_function=_link_or_copy, dirs_exist_ok=True,
                        ignore=lambda where, names: names if Path(where).name in wanted and Path(where).parent == bundle_folder else [])
        for component in wanted:
            shutil.copytree(bundle_folder / component, folder / component, dirs_exist_ok=True)
        manifest = _optimize_components(folder, manifest, wanted, target, keep_original, progress, optimize_model)
        manifests.seal(folder)
        manifests.install(folder, bundle_folder)
    finally:
        if folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
    return manifest


def _link_or_copy(source, target):
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _optimize_components(folder: Path, manifest: dict, wanted: list[str], target: str, keep_original: bool, progress,
                         optimize_model) -> dict:
    from sdlite.manifest import component_files

    done = {}
    for component in wanted:
        started = time.perf_counter()
        if progress:
            progress(component, "start", 0.0)
        entry = manifest["components"][component]
        original = folder / entry.get("file", f"{component}/model.onnx")
        target_path = folder / component / OPTIMIZED_FILE
        if original.name == OPTIMIZED_FILE:  # optimised before
            done[component] = (manifest.get("optimization") or {}).get("components", {}).get(component, {"fused": {}})
            continue
        large = sum(p.stat().st_size for p in component_files(folder / component)) > 1_500_000_000
        optimized = optimize_model(str(original), model_type=MODEL_TYPES[component], opt_level=0, use_gpu=target == "cuda",
                                   optimization_options=fusion_options(MODEL_TYPES[component], target), only_onnxruntime=False)
        if target == "cpu":  # the cuda target packs Q|K|V for MultiHeadAttention instead (enable_packed_qkv)
            split_self_attention(optimized.model)
        fused = {k: v for k, v in optimized.get_fused_operator_statistics().items() if v}
        for stale in folder.joinpath(component).glob(OPTIMIZED_FILE + "*"):
            stale.unlink()
        optimized.save_model_to_file(str(target_path), use_external_data_format=large, all_tensors_to_one_file=True)
        if not fused:  # nothing to gain: keep the original graph
            for written in folder.joinpath(component).glob(OPTIMIZED_FILE + "*"):
                written.unlink()
            done[component] = {"fused": {}, "seconds": time.perf_counter() - started}
            continue
        diff = _check(original, target_path, entry.get("dtype", "fp32"))
        entry["file"] = f"{component}/{OPTIMIZED_FILE}"
        written = sorted(p for p in (folder / component).iterdir() if p.name.startswith(OPTIMIZED_FILE))
        for path in written:
            path.chmod(manifests.MODEL_FILE_MODE)  # some writers create private files; model files are read-only
        entry["files"] = manifests.entries(folder, written)
        if not keep_original:
            for stale in component_files(folder / component):
                if not stale.name.startswith(OPTIMIZED_FILE):
                    stale.unlink()
        done[component] = {"max_abs_diff": diff, "fused": fused, "seconds": time.perf_counter() - started}
        if progress:
            progress(component, "done", time.perf_counter() - started)
    manifest["optimization"] = {"tool": "onnxruntime.transformers.optimizer", "target": target, "components": done}
    return manifests.write(folder, manifest)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.optimize", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="a bundle made by python -m export")
    parser.add_argument("--components", nargs="+", choices=list(MODEL_TYPES), help="components to optimise (default: all present)")
    parser.add_argument("--target", choices=TARGETS, default="cpu", help="cpu: fusions both providers run (default); cuda: also CUDA-only ones")
    parser.add_argument("--keep-original", action="store_true", help="keep the unfused graphs beside the fused ones")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("onnxruntime").setLevel(logging.WARNING)
    def describe(manifest):
        return "\n".join(f"{component}: " + (f"max abs diff {r['max_abs_diff']:.3g}, fused {r['fused']}" if r["fused"] else "nothing to fuse, kept")
                         for component, r in manifest["optimization"]["components"].items())

    return run_task(
        lambda: optimize_bundle(args.bundle, components=args.components, target=args.target, keep_original=args.keep_original,
                                progress=lambda c, e, s: log.info("optimising %s ..." % c if e == "start" else "optimised %s in %.1f s" % (c, s))),
        describe,
    )

if __name__ == "__main__":
    sys.exit(main())
