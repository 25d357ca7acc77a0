"""int8 bundles: onnxruntime's static QDQ quantization of a bundle's networks, calibrated on real images.

python -m export.quantize BUNDLE --images DIR --output OUT [--components ...] [--budget 0.15 | --keep-edges N] [--calibration minmax]

Per component: quant_pre_process (shape inference and graph clean-up), then quantize_static in QDQ
format with per-channel int8 weights and uint8 activations (MinMax calibration unless told otherwise):
on CPUs with AVX-512 VNNI (or AVX2), onnxruntime runs the convolutions and matrix products as int8. An
optimised bundle (export.optimize) quantizes too: its fused attention stays float, everything around it
int8 (the contrib ops' outputs are typed first, see _prepare_graph). Calibration inputs come from the
images (MAX_CALIBRATION_IMAGES spread over the folder and its subfolders, each scaled and centre-cropped to
CALIBRATION_SIDE): the crops for the VAE encoder, their latents (from the bundle's own fp32 encoder) for
the VAE decoder, and those latents noised to the decoder's denoising level for the U-Net.

Which nodes stay float is measured for the VAE networks (export.sensitivity): first the network int8 but
its first and last convolutions, the pixel error it adds to the round trip on the crops against `budget`
(default 0.15 of the fp32 round trip's error there, see sensitivity.FLOAT_BUDGET); when it misses, each
node int8 alone, its added error, and the fewest most sensitive nodes float for the network to stay within
budget, at most a fifth of them (networks over SENSITIVITY_MAX_BYTES, such as SD's VAE, skip this pass).
A network that misses the budget even then stays fp32 in the new bundle; the manifest's
quantization.float records, per network, the rule, the float nodes, the measured errors and whether it
stayed fp32. The U-Net (its loss cannot be measured without real weights) keeps KEEP_EDGE_CONVS
convolutions at each end float; --keep-edges N applies that rule to every network instead of measuring.

The new bundle's model id is its own (the networks changed), so streams of the fp32 bundle decode with
it through decoder_mismatch="allow", as with any other decoder of the same latent space. Measured
quality and speed: BENCHMARKS.md.
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

from . import sensitivity
from .cli_support import run_task
from .errors import ExportError
from sdlite.errors import SdliteError

log = logging.getLogger("export")

CALIBRATION_SIDE = 256
MAX_CALIBRATION_IMAGES = 16
CALIBRATION_MAX_PIXELS = 1 << 26  # 67 MP: an 8K photo is 33 MP; a larger claim is refused before decoding
UNET_CALIBRATION_TIMESTEP = 40  # the decoder's default denoising level (strength 0.04)
QUANTIZATION = "int8-static-qdq"
# The per-node pass quantizes and evaluates the network once per node: minutes for the 5 MB TAE networks,
# hours for SD's 130-190 MB VAE networks. Above this size only the first try (float edges) is measured.
SENSITIVITY_MAX_BYTES = 50_000_000
KEEP_EDGE_CONVS = 1  # first and last convolutions float: the U-Net's rule, and the VAE networks' first try
FLOAT_BUDGET = sensitivity.FLOAT_BUDGET
CALIBRATION_METHODS = {"minmax": "MinMax", "percentile": "Percentile", "entropy": "Entropy"}  # name -> onnxruntime CalibrationMethod
DEFAULT_CALIBRATION = "minmax"


def _calibration_images(folder: Path, count: int) -> tuple[list[np.ndarray], list[str]]:
    """(crops, their files relative to `folder`): up to `count` readable photos from `folder` and its subfolders, evenly spread over their sorted names (a folder
    of wallpapers sorted by theme gives every theme), each scaled so its shorter side is twice
    CALIBRATION_SIDE (a huge photo's centre is otherwise one flat patch) and centre-cropped to a square. A
    file that does not decode, or claims more than CALIBRATION_MAX_PIXELS, is skipped with a warning."""
    from PIL import Image

    from sdlite import images as sd_images

    suffixes = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}
    paths = sorted(p for p in Path(folder).rglob("*") if p.suffix.lower() in suffixes and p.is_file()) if Path(folder).is_dir() else []
    if not paths:
        raise ExportError(f"no calibration images in {folder}: give a folder of a few photos (png, jpg, webp ...)")
    picked = [paths[round(i * (len(paths) - 1) / max(1, count - 1))] for i in range(min(count, len(paths)))] if len(paths) > count else paths
    crops, used = [], []
    for path in picked:
        try:
            rgb = sd_images.load_rgb(path, max_pixels=CALIBRATION_MAX_PIXELS)
        except SdliteError as exc:  # one bad file in a folder of photos: said, and the others calibrate
            log.warning("calibration image %s skipped: %s", path, exc)
            continue
        shorter = min(rgb.shape[:2])
        if shorter > 2 * CALIBRATION_SIDE:
            scale = 2 * CALIBRATION_SIDE / shorter
            size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
            rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.LANCZOS))
        side = min(CALIBRATION_SIDE, rgb.shape[0] // 8 * 8, rgb.shape[1] // 8 * 8)
        top, left = (rgb.shape[0] - side) // 2, (rgb.shape[1] - side) // 2
        crops.append(sd_images.to_tensor(np.ascontiguousarray(rgb[top : top + side, left : left + side])))
        used.append(path.relative_to(folder).as_posix())
    if not crops:
        raise ExportError(f"none of the {len(picked)} calibration images in {folder} could be read (see the warnings)")
    return crops, used


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


def _prepare_graph(path: Path, max_passes: int = 1000):
    """Ready the pre-processed graph for the quantizer, in one rewrite of the graph alone (external data
    stays where it is), and return it (an onnx ModelProto without weights). Unnamed nodes get names (the
    quantizer excludes by name). Contrib-op outputs (MultiHeadAttention, SkipLayerNormalization, ... of an
    optimised graph) get the element type of their first input, and onnx's shape inference carries the
    types downstream. Why: onnx knows no com.microsoft schemas, and the quantizer leaves every tensor
    without a type float, so an optimised U-Net lost a quarter of its int8 convolutions and products."""
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
    return model


def _weight_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())


def _edge_convolutions(graph, keep_edges: int) -> list[str]:
    """The first and last `keep_edges` Conv nodes (the image and latent ends)."""
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    return convs[:keep_edges] + convs[-keep_edges:] if keep_edges else []


def _quantizer(source: Path, folder: Path, feeds: list[dict], *, large: bool, calibration: str):
    """Pre-process `source` into `folder`; return (its graph, quantize(target, only, exclude)), where
    quantize writes an int8 copy with the given nodes (None: all) minus the excluded ones. Calibration runs
    once: later copies read its ranges from a cache file (onnxruntime >= 1.25; older ones recalibrate)."""
    import inspect

    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = folder / "prepared.onnx"
    quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True, save_as_external_data=large)
    graph = _prepare_graph(prepared).graph
    cache = {"calibration_cache_path": str(folder / "ranges.json")} if "calibration_cache_path" in inspect.signature(quantize_static).parameters else {}

    def quantize(target: Path, only: list | None, exclude: list) -> None:
        quantize_static(
            str(prepared), str(target), _Reader(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, CALIBRATION_METHODS[calibration]),
            nodes_to_quantize=only, nodes_to_exclude=exclude, use_external_data_format=large,
            extra_options={"ActivationSymmetric": False, "WeightSymmetric": True}, **cache,
        )

    return graph, quantize


def _judge(component: str, model, crops: list[np.ndarray], feeds: list[dict]):
    """(baseline MSE, added_error(path)) for int8 copies of a VAE `component` on the calibration crops: the
    fp32 round trip's pixel error against the crops, and how much a copy adds to it (its round trip's error
    against the crops minus the baseline: the PSNR it costs, as Kodak measures it; int8 noise that the fp32
    network's own error absorbs costs nothing). The encoder is judged through the fp32 decoder."""
    import onnxruntime as ort

    def pixels(latents):
        return np.clip(model.decode(latents, tile=None), -1.0, 1.0)

    if component == "vae_decoder":
        def outputs(session):
            return [np.clip(session.run(None, feed)[0], -1.0, 1.0) for feed in feeds]
    else:
        names = [o.name for o in model.session("vae_encoder").get_outputs()]
        wanted = "latent_parameters" if "latent_parameters" in names else names[0]

        def outputs(session):
            return [pixels(session.run([wanted], feed)[0][:, : model.latent_channels]) for feed in feeds]

    def error(pictures) -> float:
        return float(np.mean([np.mean((p - c) ** 2) for p, c in zip(pictures, crops)]))

    baseline = error(outputs(model.session(component)))

    def added_error(path: Path) -> float:
        return error(outputs(ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]))) - baseline

    return baseline, added_error


def _manifest(info, components_done: list[str], folder: Path, calibration: list[str], source_path: Path, floats: dict,
              calibration_method: str = DEFAULT_CALIBRATION) -> dict:
    """calibration: the calibration photos, relative to the folder given; floats: component -> what stayed
    float in it and why (the rule, its measurements)."""
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
                         "calibration_images": len(calibration), "calibration_files": calibration,
                         "calibration_side": CALIBRATION_SIDE, "calibration_method": calibration_method,
                         "float": {**(earlier.get("float") or {}), **floats},
                         "derived_from": earlier.get("derived_from", info.model_id), "source": earlier.get("source", str(source_path))},
    }
    manifest.setdefault("source", {"kind": "local", "model": str(source_path), "revision": None, "vae": None})
    manifest.setdefault("uncond_embedding", "uncond.npy" if "unet" in info.components else None)
    manifest.setdefault("scheduler", "scheduler/scheduler_config.json" if (folder / "scheduler").is_dir() else None)
    return manifests.write(folder, manifest)


def quantize_bundle(bundle, output, *, images, components=None, max_images: int = MAX_CALIBRATION_IMAGES, force: bool = False,
                    keep_edges: int | None = None, budget: float = FLOAT_BUDGET, calibration: str = DEFAULT_CALIBRATION,
                    progress=None) -> dict:
    """Write an int8 copy of `bundle` to `output` and return its manifest (see the module docstring).
    keep_edges: None (default) lets export.sensitivity choose the VAE networks' float nodes within `budget`
    (the U-Net keeps KEEP_EDGE_CONVS edge convolutions float); a number keeps that many convolutions at each
    end float in every network, measuring nothing. calibration: one of CALIBRATION_METHODS."""
    import onnx

    from sdlite.bundle import read_bundle
    from sdlite.model import Model

    from .bundle import install, seal

    source = Path(bundle)
    info = read_bundle(source)
    wanted = list(components or sorted(info.components))
    missing = [c for c in wanted if c not in info.components]
    if missing:
        raise ExportError(f"bundle {source} has no {', '.join(missing)} (it has: {', '.join(sorted(info.components))})")
    if keep_edges is not None and keep_edges < 0:
        raise ExportError(f"keep_edges must be None (measured choice) or >= 0, got {keep_edges}")
    if not budget > 0:
        raise ExportError(f"budget must be > 0 (a share of the fp32 round trip's error), got {budget}")
    if calibration not in CALIBRATION_METHODS:
        raise ExportError(f"unknown calibration {calibration!r}; choose one of: {', '.join(CALIBRATION_METHODS)}")
    output = Path(output)
    if output.exists() and not force:
        raise ExportError(f"{output} already exists; pass --force (force=True) to replace it")
    crops, calibration_files = _calibration_images(Path(images), max_images)
    floats: dict = {}
    done: list[str] = []  # components that became int8 (a network int8 cannot keep stays fp32)
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
            large = _weight_bytes(source / component) > 1_500_000_000
            feeds = _feeds(component, model, crops)
            with tempfile.TemporaryDirectory() as work:
                graph, quantize = _quantizer(source / info.component_files[component], Path(work), feeds, large=large, calibration=calibration)
                if keep_edges is None and component != "unet" and "vae_decoder" in info.components:
                    baseline, added_error = _judge(component, model, crops, feeds)
                    choice = sensitivity.choose(quantize, added_error, baseline, Path(work), budget=budget,
                                                nodes_of=lambda path: sensitivity.int8_nodes(onnx.load(str(path), load_external_data=False).graph),
                                                always_float=tuple(_edge_convolutions(graph, KEEP_EDGE_CONVS)),
                                                measure_nodes=_weight_bytes(source / component) <= SENSITIVITY_MAX_BYTES,
                                                progress=lambda line, c=component: log.info("%s: %s", c, line))
                    floats[component] = choice.to_manifest()
                    if not choice.within_budget:  # int8 cannot keep this network's quality: it stays fp32
                        log.warning("%s stays fp32: int8 adds %.3g to its error even with %d nodes float (budget %.3g)%s",
                                    component, choice.mixed_mse, len(choice.float_nodes), budget * baseline,
                                    "" if choice.sensitivity else "; too large for a pass per node: --keep-edges 1 makes it int8 anyway")
                        floats[component]["kept_fp32"] = True
                        shutil.copytree(source / component, target_dir, dirs_exist_ok=True)
                        continue
                    if large:  # its weights lie in an external file named for the trial model: write it afresh
                        quantize(target_dir / "model.onnx", None, list(choice.float_nodes))
                    else:
                        shutil.move(choice.model, target_dir / "model.onnx")  # as measured: not quantized twice
                else:
                    edges = KEEP_EDGE_CONVS if keep_edges is None else keep_edges
                    float_nodes = _edge_convolutions(graph, edges)
                    floats[component] = {"rule": "edges", "edge_convolutions": edges, "float_nodes": float_nodes}
                    quantize(target_dir / "model.onnx", None, float_nodes)
                done.append(component)
            if progress:
                progress(component, "done", time.perf_counter() - started)
        if not done and not (info.manifest or {}).get("quantization"):
            raise ExportError(f"int8 cannot keep the quality of any of {', '.join(wanted)} within budget {budget} "
                              f"(see the log); the fp32 bundle {source} is the one to use, or raise --budget")
        manifest = _manifest(info, done, staging, calibration_files, source.resolve(), floats, calibration)
        seal(staging)
        install(staging, output, force=force)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m export.quantize", description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="bundle to quantize (a manifest bundle or an optimum-layout folder)")
    parser.add_argument("--images", required=True, help=f"folder of photos for calibration, searched recursively ({MAX_CALIBRATION_IMAGES} spread over it are used)")
    parser.add_argument("--output", "-o", required=True, help="the int8 bundle to write")
    parser.add_argument("--components", nargs="+", choices=["vae_encoder", "vae_decoder", "unet"], help="components to quantize (default: all present)")
    parser.add_argument("--keep-edges", type=int, default=None, metavar="N",
                        help="keep the first and last N convolutions of every network float and measure nothing (default: "
                             "the first and last float when that is within --budget, else also the fewest most sensitive "
                             "nodes, else the network stays fp32)")
    parser.add_argument("--budget", type=float, default=FLOAT_BUDGET, metavar="SHARE",
                        help="added pixel error the int8 VAE networks may cost, as a share of the fp32 round trip's error "
                             "on the calibration crops (default %(default)s)")
    parser.add_argument("--calibration", choices=list(CALIBRATION_METHODS), default=DEFAULT_CALIBRATION,
                        help="how activation ranges are estimated (default %(default)s)")
    parser.add_argument("--force", action="store_true", help="replace an existing bundle at --output")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    # onnxruntime's quantizer logs at INFO on the root logger: quiet it, but keep this module's progress
    for name in ("onnxruntime", "root"):
        logging.getLogger(name).setLevel(logging.WARNING)
    log.setLevel(logging.INFO)

    def progress(component, event, seconds):
        log.info("quantizing %s ..." if event == "start" else "quantized %s in %.1f s", component, *([seconds] if event == "done" else []))

    return run_task(
        lambda: quantize_bundle(args.bundle, args.output, images=args.images, components=args.components, force=args.force,
                                keep_edges=args.keep_edges, budget=args.budget, calibration=args.calibration, progress=progress),
        lambda manifest: f"{args.output}: model id {manifest['model_id']}, {QUANTIZATION} of {', '.join(manifest['quantization']['components'])}",
    )

if __name__ == "__main__":
    sys.exit(main())
