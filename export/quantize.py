"""int8 bundles: onnxruntime's static QDQ quantization of a bundle's networks, calibrated on real images.

python -m export.quantize BUNDLE --images DIR --output OUT [--components vae_encoder vae_decoder unet]

Per component: quant_pre_process (shape inference and graph clean-up), then quantize_static in QDQ
format with per-channel int8 weights and uint8 activations (MinMax calibration unless told otherwise):
on CPUs with AVX-512 VNNI (or AVX2), onnxruntime runs the convolutions and matrix products as int8. An
optimised bundle (export.optimize) quantizes too: its fused attention stays float, everything around it
int8 (the contrib ops' outputs are typed first, see _prepare_graph). Calibration inputs come
from the images: centre crops of CALIBRATION_SIDE pixels for the VAE encoder, their latents (from the
bundle's own fp32 encoder) for the VAE decoder, and those latents noised to the decoder's denoising
level for the U-Net. The new bundle's manifest says how it was quantized and from which model; its model
id is its own (the networks changed), so streams of the fp32 bundle decode with it through
decoder_mismatch="allow", as with any other decoder of the same latent space.

Quality of int8 networks is the user's call: measured on TAESD and VAElight (BENCHMARKS.md); for the
full SD networks it cannot be measured here without real weights.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .cli_support import run_task
from .errors import ExportError

log = logging.getLogger("export")

CALIBRATION_SIDE = 256
MAX_CALIBRATION_IMAGES = 8
UNET_CALIBRATION_TIMESTEP = 40  # the decoder's default denoising level (strength 0.04)
QUANTIZATION = "int8-static-qdq"
KEEP_EDGE_CONVS = 1  # first and last convolutions of each network stay float (measured: BENCHMARKS.md)
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}  # name -> onnxruntime CalibrationMethod
DEFAULT_CALIBRATION = "minmax"


def _calibration_images(folder: Path, count: int) -> list[np.ndarray]:
    from sdlite import images as sd_images

    suffixes = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in suffixes) if Path(folder).is_dir() else []
    if not paths:
        raise ExportError(f"no calibration images in {folder}: give a folder of a few photos (png, jpg, webp ...)")
    crops = []
    for path in paths[:count]:
        rgb = sd_images.load_rgb(path, max_pixels=None)
        side = min(CALIBRATION_SIDE, rgb.shape[0] // 8 * 8, rgb.shape[1] // 8 * 8)
        top, left = (rgb.shape[0] - side) // 2, (rgb.shape[1] - side) // 2
        crops.append(sd_images.to_tensor(np.ascontiguousarray(rgb[top : top + side, left : left + side])))
    return crops


class _Reader:
    """onnxruntime's CalibrationDataReader protocol over a list of feeds."""

    def __init__(self, feeds: list[dict]):
        self.feeds = iter(feeds)

    def get_next(self):
        return next(self.feeds, None)


def _feeds(component: str, model, crops: list[np.ndarray]) -> list[dict]:
    from sdlite.model import feed_inputs

    if component == "vae_encoder":
        session = model.session("vae_encoder")
        return [{session.get_inputs()[0].name: crop} for crop in crops]
    latents = [model.encode(crop, tile=None) for crop in crops]
    if component == "vae_decoder":
        session = model.session("vae_decoder")
        return [{session.get_inputs()[0].name: z} for z in latents]
    session = model.session("unet")
    names = [i.name for i in session.get_inputs()]
    text = "encoder_hidden_states" if "encoder_hidden_states" in names else names[-1]
    rng = np.random.default_rng(0)
    feeds = []
    for z in latents:
        sample = model.scheduler.add_noise((z - float(model.shift_factor or 0.0)) * model.scaling_factor, UNET_CALIBRATION_TIMESTEP,
                                           rng.standard_normal(z.shape).astype(np.float32))
        feeds.append(feed_inputs(session, {names[0]: sample, "timestep": np.array(UNET_CALIBRATION_TIMESTEP, np.float32),
                                           text: model.uncond_embedding}))
    return feeds


def _prepare_graph(path: Path, keep_edges: int, max_passes: int = 1000) -> list[str]:
    """Ready the pre-processed graph for the quantizer, in one rewrite of the graph alone (external data
    stays where it is), and return the names of the first and last `keep_edges` Conv nodes, kept float
    (the image and latent ends). Unnamed nodes get names (the quantizer excludes by name). Contrib-op
    outputs (MultiHeadAttention, SkipLayerNormalization, ... of an optimised graph) get the element type
    of their first input, and onnx's shape inference carries the types downstream. Why: onnx knows no
    com.microsoft schemas, and the quantizer leaves every tensor without a type float, so an optimised
    U-Net lost a quarter of its int8 convolutions and products."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    changed = False
    for i, node in enumerate(model.graph.node):
        if not node.name:
            node.name, changed = f"{node.op_type}_{i}", True
    for _ in range(max_passes):
        model = onnx.shape_inference.infer_shapes(model)
        graph = model.graph
        types = {v.name: v.type.tensor_type.elem_type for v in [*graph.value_info, *graph.input, *graph.output]}
        types.update({init.name: init.data_type for init in graph.initializer})
        added = 0
        for node in graph.node:
            if node.domain in ("", "ai.onnx") or not node.input or not types.get(node.input[0]):
                continue
            for output in node.output:
                if output and not types.get(output):
                    graph.value_info.append(onnx.helper.make_tensor_value_info(output, types[node.input[0]], None))
                    types[output] = types[node.input[0]]
                    added += 1
        changed = changed or added > 0
        if not added:
            break
    if changed:
        onnx.save(model, str(path))
    convs = [n.name for n in model.graph.node if n.op_type == "Conv"]
    return convs[:keep_edges] + convs[-keep_edges:] if keep_edges else []


def _quantize_file(source: Path, target: Path, feeds: list[dict], *, large: bool, keep_edges: int,
                   calibration: str = DEFAULT_CALIBRATION) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as folder:
        prepared = Path(folder) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True, save_as_external_data=large)
        float_edges = _prepare_graph(prepared, keep_edges)
        quantize_static(
            str(prepared), str(target), _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[calibration]),
            nodes_to_exclude=float_edges,
            use_external_data_format=large, extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
        )


def _manifest(info, components_done: list[str], folder: Path, calibration: int, source_path: Path, keep_edges: int,
              calibration_method: str = DEFAULT_CALIBRATION) -> dict:
    from sdlite import manifest as manifests

    old = dict(info.manifest or {})
    old.pop("bundle_format", None)
    old.pop("created", None)
    earlier = old.get("quantization") or {}  # quantizing an int8 bundle further: keep what was done and the float origin
    files = {}
    for name in sorted(info.components):
        previous = (old.get("components") or {}).get(name, {})
        if name in components_done:  # a new graph: model.onnx, whatever the source's file was called
            files[name] = manifests.component_entry(folder, name, dtype="int8", validation_max_abs_diff=None)
        else:  # unchanged: keep its file (an optimised graph keeps its name) and what the manifest said of it
            files[name] = {**previous, "file": info.component_files[name]} if previous.get("files") else \
                manifests.component_entry(folder, name, dtype="fp32", validation_max_abs_diff=None)
    optimization = old.pop("optimization", None)
    if optimization:  # quantized components are no longer the optimised graphs
        kept = {c: v for c, v in (optimization.get("components") or {}).items() if c not in components_done}
        if kept:
            old["optimization"] = {**optimization, "components": kept}
    manifest = {
        **old,
        "model_id": manifests.files_model_id(files),  # int8 weights compute another function: another id
        "model_id_rule": "files",
        "components": files,
        "latent_space": info.latent_space.to_manifest() if info.latent_space else None,
        "scaling_factor": info.scaling_factor,
        "shift_factor": info.shift_factor,
        "latent_channels": info.latent_channels,
        "downsample_factor": info.downsample_factor,
        "quantization": {"method": QUANTIZATION, "components": sorted(set(components_done) | set(earlier.get("components", []))),
                         "calibration_images": calibration, "calibration_side": CALIBRATION_SIDE, "calibration_method": calibration_method,
                         "float_edge_convolutions": keep_edges,
                         "derived_from": earlier.get("derived_from", info.model_id), "source": earlier.get("source", str(source_path))},
    }
    manifest.setdefault("source", {"kind": "local", "model": str(source_path), "revision": None, "vae": None})
    manifest.setdefault("uncond_embedding", "uncond.npy" if "unet" in info.components else None)
    manifest.setdefault("scheduler", "scheduler/scheduler_config.json" if (folder / "scheduler").is_dir() else None)
    return manifests.write(folder, manifest)


def quantize_bundle(bundle, output, *, images, components=None, max_images: int = MAX_CALIBRATION_IMAGES, force: bool = False,
                    keep_edges: int = KEEP_EDGE_CONVS, calibration: str = DEFAULT_CALIBRATION, progress=None) -> dict:
    """Write an int8 copy of `bundle` to `output` and return its manifest (see the module docstring).
    calibration: how activation ranges are estimated, one of CALIBRATION_METHODS."""
    from sdlite.bundle import read_bundle
    from sdlite.model import Model

    from .bundle import install, seal

    source = Path(bundle)
    info = read_bundle(source)
    wanted = list(components or sorted(info.components))
    missing = [c for c in wanted if c not in info.components]
    if missing:
        raise ExportError(f"bundle {source} has no {', '.join(missing)} (it has: {', '.join(sorted(info.components))})")
    if calibration not in CALIBRATION_METHODS:
        raise ExportError(f"unknown calibration {calibration!r}; choose one of: {', '.join(CALIBRATION_METHODS)}")
    output = Path(output)
    if output.exists() and not force:
        raise ExportError(f"{output} already exists; pass --force (force=True) to replace it")
    crops = _calibration_images(Path(images), max_images)
    model = Model(source, providers=["CPUExecutionProvider"])
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))
    try:
        for item in source.iterdir():
            if item.name != "manifest.json":
                (shutil.copytree if item.is_dir() else shutil.copy2)(item, staging / item.name)
        for component in wanted:
            started = time.perf_counter()
            if progress:
                progress(component, "start", 0.0)
            target_dir = staging / component
            for old in target_dir.iterdir():
                if old.name != "config.json":
                    old.unlink()
            large = sum(p.stat().st_size for p in (source / component).iterdir()) > 1_500_000_000
            _quantize_file(source / info.component_files[component], target_dir / "model.onnx", _feeds(component, model, crops), large=large,
                           keep_edges=keep_edges, calibration=calibration)
            if progress:
                progress(component, "done", time.perf_counter() - started)
        manifest = _manifest(info, wanted, staging, len(crops), source.resolve(), keep_edges, calibration)
        seal(staging)
        install(staging, output, force=force)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.quantize", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="bundle to quantize (a manifest bundle or an optimum-layout folder)")
    parser.add_argument("--images", required=True, help=f"folder of a few photos for calibration (the first {MAX_CALIBRATION_IMAGES} are used)")
    parser.add_argument("--output", "-o", required=True, help="the int8 bundle to write")
    parser.add_argument("--components", nargs="+", choices=["vae_encoder", "vae_decoder", "unet"], help="components to quantize (default: all present)")
    parser.add_argument("--keep-edges", type=int, default=KEEP_EDGE_CONVS, metavar="N",
                        help=f"first and last N convolutions stay float (default {KEEP_EDGE_CONVS})")
    parser.add_argument("--calibration", choices=list(CALIBRATION_METHODS), default=DEFAULT_CALIBRATION,
                        help="how activation ranges are estimated (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle at --output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("onnxruntime", "root"):
        logging.getLogger(name).setLevel(logging.WARNING)

    def progress(component, event, seconds):
        log.info("quantizing %s ..." if event == "start" else "quantized %s in %.1f s", component, *([seconds] if event == "done" else []))

    return run_task(
        lambda: quantize_bundle(args.bundle, args.output, images=args.images, components=args.components, force=args.force,
                                keep_edges=args.keep_edges, calibration=args.calibration, progress=progress),
        lambda manifest: f"{args.output}: model id {manifest['model_id']}, {QUANTIZATION} of {', '.join(manifest['quantization']['components'])}",
    )

if __name__ == "__main__":
    sys.exit(main())
