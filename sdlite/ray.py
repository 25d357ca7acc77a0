"""sdlite on Ray Data: compress and decompress datasets of images or latents, one model per worker.

    import ray, sdlite.ray
    ds = ray.data.read_images("photos/", include_paths=True)          # rows: image (HxWx3 uint8), path
    packed = sdlite.ray.compress_dataset(ds, model="models/taesd", quality=60).materialize()  # rows: sdz (bytes), path
    packed.write_parquet("photos.sdz.parquet")
    back = sdlite.ray.decompress_dataset(packed, model="models/taesd")            # rows: image, path

Each worker (a Ray actor) loads the model once; within a batch the VAE encoder (and decoder) runs once
per group of same-sized images, then each image goes through the same code as sdlite.compress, so the
streams are byte-identical to the single-process API. `num_gpus=` puts workers on GPUs (install
onnxruntime-gpu). Each worker is an actor holding `num_cpus` (default 1) for its lifetime: on a small
cluster, materialize() a compressed dataset before decompressing it, so that the two stages' actors do
not wait for each other's CPUs. Needs the optional extra: pip install 'sdlite[ray]'.
"""

from __future__ import annotations

import numpy as np

from . import bitstream, images
from .codec import compress_latents, compress_rgb, decompress, decompress_latents, full_size_latents
from .errors import OptionError, SdliteError
from .model import load_model
from .options import CompressOptions

__all__ = ["compress_dataset", "decompress_dataset", "DEFAULT_BATCH_SIZE"]

DEFAULT_BATCH_SIZE = 8
"""Images per worker call: the encoder runs once per group of same-sized images within it."""


def _reason(exc: BaseException) -> str:
    """A row's error text: sdlite's message, or the exception's type and message for anything else."""
    return str(exc) if isinstance(exc, SdliteError) else f"{type(exc).__name__}: {exc}"


def _rows(batch: dict) -> int:
    return len(next(iter(batch.values()))) if batch else 0


class _Compressor:
    """A Ray Data callable class: one model per actor, reused for every batch."""

    def __init__(self, model, column, kind, request: CompressOptions, load_options):
        self.model = load_model(model, **load_options)
        self.column, self.kind, self.request = column, kind, request.for_model(self.model)
        self.tile = request.tile

    def __call__(self, batch: dict) -> dict:
        values = list(batch[self.column])
        out = [None] * len(values)
        errors = [""] * len(values)
        if self.kind == "latents":
            for i, latents in enumerate(values):
                try:
                    out[i] = compress_latents(np.asarray(latents, dtype=np.float32), model=self.model, method=self.request.method,
                                              **self.request.method_options())
                except Exception as exc:  # one bad row never fails the batch: it gets its error
                    errors[i] = _reason(exc)
        else:
            rgbs = {}
            for i, value in enumerate(values):
                try:
                    if self.kind == "path":
                        value = str(value)
                    elif not isinstance(value, (bytes, bytearray)):
                        value = np.asarray(value)
                    rgbs[i] = images.load_rgb(value, max_pixels=self.request.max_pixels)
                except Exception as exc:
                    errors[i] = _reason(exc)
            by_shape: dict[tuple, list[int]] = {}
            for i, rgb in rgbs.items():
                by_shape.setdefault(rgb.shape, []).append(i)
            for members in by_shape.values():
                try:
                    latents = self._encode_group([rgbs[i] for i in members])
                except Exception:  # one image of the group may be the cause: encode them one by one
                    latents = [None] * len(members)
                for i, full in zip(members, latents):
                    try:
                        out[i] = compress_rgb(rgbs[i], self.model, self.request, full_latents=full)[0]
                    except Exception as exc:
                        errors[i] = _reason(exc)
        result = {k: v for k, v in batch.items() if k != self.column or self.kind == "path"}
        result["sdz"] = np.array([b"" if data is None else data for data in out], dtype=object)
        result["error"] = np.array(errors, dtype=object)
        return result

    def _encode_group(self, rgbs: list[np.ndarray]) -> list[np.ndarray]:
        """The encoder's full-size latents of same-sized images, one network call for the group when
        the images fit one tile (larger ones go one by one, by tiles)."""
        height, width = rgbs[0].shape[:2]
        cells = max(height, width) / self.model.downsample_factor
        if len(rgbs) == 1 or (self.tile is not None and cells > self.tile):
            return [full_size_latents(rgb, self.model, tile=self.tile) for rgb in rgbs]
        stacked = np.concatenate([images.to_tensor(images.pad_to_multiple(rgb, self.model.downsample_factor)) for rgb in rgbs])
        return list(self.model.encode(stacked, tile=None))


class _Decompressor:
    def __init__(self, model, column, output, options, load_options):
        self.model = None if output == "latents" else load_model(model, **load_options)
        self.column, self.output, self.options = column, output, dict(options)

    def __call__(self, batch: dict) -> dict:
        values = list(batch[self.column])
        out, errors = [None] * len(values), [""] * len(values)
        for i, data in enumerate(values):
            try:
                if self.output == "latents":
                    out[i] = decompress_latents(bytes(data), max_pixels=self.options.get("max_pixels", bitstream.DEFAULT_MAX_PIXELS))[0]
                else:
                    out[i] = np.asarray(decompress(bytes(data), model=self.model, **self.options))
            except Exception as exc:
                errors[i] = _reason(exc)
        result = {k: v for k, v in batch.items() if k != self.column}
        empty = np.zeros((0, 0, 3), np.uint8) if self.output == "image" else np.zeros((0, 0, 0), np.float32)
        column = np.empty(len(out), dtype=object)
        column[:] = [empty if value is None else value for value in out]
        result[self.output] = column
        result["error"] = np.array(errors, dtype=object)
        return result


def _worker_options(num_gpus, num_cpus, concurrency) -> dict:
    options = {"concurrency": concurrency or 1}
    if num_gpus:
        options["num_gpus"] = num_gpus
    if num_cpus:
        options["num_cpus"] = num_cpus
    return options


def _request(options: CompressOptions | None, keywords: dict) -> CompressOptions:
    if options is not None:
        if keywords:
            raise OptionError(f"pass options= or separate options, not both (also given: {', '.join(sorted(keywords))})")
        if not isinstance(options, CompressOptions):
            raise OptionError(f"options must be a sdlite.CompressOptions, got {type(options).__name__}")
        return options
    unknown = sorted(set(keywords) - set(CompressOptions.__dataclass_fields__))
    if unknown:
        raise OptionError(f"unknown option {unknown[0]!r}; the options are {', '.join(CompressOptions.__dataclass_fields__)}")
    return CompressOptions(**keywords)


def compress_dataset(ds, *, model, column: str = "image", kind: str = "image", batch_size: int = DEFAULT_BATCH_SIZE,
                     concurrency: int | None = None, num_gpus: float | None = None, num_cpus: float | None = None,
                     providers=None, threads: int | None = None, options: CompressOptions | None = None, **keywords):
    """A Dataset with column `sdz` (stream bytes) and `error` ("" or the reason a row failed) in place of
    `column`; other columns (e.g. path) pass through. kind "image": rows hold HxWx3 (or 4) arrays, as
    ray.data.read_images yields, or image-file bytes; kind "path": image file paths the workers read (the
    CLI's --ray); kind "latents": raw latents (C, h, w), fp16 or fp32.
    options: a CompressOptions, or its fields as keywords (method, quality, target_bytes, effort, scale, ...):
    checked here, on the driver, before any worker starts, and shipped to the workers as one object.
    concurrency: workers (each loads the model once); num_gpus / num_cpus: resources per worker."""
    if kind not in ("image", "latents", "path"):
        raise OptionError(f"kind must be 'image', 'latents' or 'path', got {kind!r}")
    request = _request(options, keywords)
    load_options = {"providers": providers, "threads": threads}
    return ds.map_batches(_Compressor, fn_constructor_args=(model, column, kind, request, load_options), batch_size=batch_size,
                          batch_format="numpy", **_worker_options(num_gpus, num_cpus, concurrency))


def decompress_dataset(ds, *, model=None, column: str = "sdz", output: str = "image", batch_size: int = DEFAULT_BATCH_SIZE,
                       concurrency: int | None = None, num_gpus: float | None = None, num_cpus: float | None = None,
                       providers=None, threads: int | None = None, **options):
    """A Dataset with column `output` in place of `column`: "image" (HxWx3 uint8, through the model, with
    the options of sdlite.decompress) or "latents" ((C, h, w) float32, no model at all)."""
    if output not in ("image", "latents"):
        raise OptionError(f"output must be 'image' or 'latents', got {output!r}")
    load_options = {"providers": providers, "threads": threads}
    return ds.map_batches(_Decompressor, fn_constructor_args=(model, column, output, options, load_options), batch_size=batch_size,
                          batch_format="numpy", **_worker_options(num_gpus, num_cpus, concurrency))


def compress_files(paths: list, *, model, address: str | None = None, **options):
    """For the CLI: (path, stream bytes or None, error) for each path, in order, compressed by Ray workers
    (a local cluster unless `address` names one; workers must see the same files)."""
    import ray

    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    ray.data.DataContext.get_current().enable_progress_bars = False
    ds = ray.data.from_items([{"path": str(p)} for p in paths])
    for row in compress_dataset(ds, model=model, column="path", kind="path", **options).iter_rows():
        yield row["path"], (row["sdz"] or None), row["error"]
