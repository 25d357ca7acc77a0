"""Fuzzing sdlite's untrusted inputs: structure-aware mutations of streams, files, bundles and records.

python -m bench fuzz --cases 100000 [--seed 0] [--out bench-out/fuzz]

Families (each case picks one): `stream` mutates a valid stream of every method and option family (a
header field set to a boundary or random value with the CRC fixed, method parameters inflated, altered
and re-deflated, payload bits flipped, cut or extended, truncation, random bytes) and runs info() and
decompress_latents(); `entropy-params` rewrites format version 4's parameters field by field (levels,
gains, step, flags, transform id, the empty-plane bitmap, group residual ranges, means, decays, weights)
with the CRC fixed; `shapes` writes streams of extreme geometry (far-from-square, one cell, many
channels, the max_pixels edge); `version-3` writes old-layout entropy streams with hostile plane headers
(huge or far-off residual ranges, wide alphabets); `pillow` opens and loads mutated .sdz data through
Image.open with an instant decoder; `bundle` mutates a bundle's manifest and config.json (types, paths,
nesting) and loads it; `records` writes hostile verified-file records and hashes through them; `pth` mutates
torch state-dict archives (the pickle's bytes and globals, storage keys and members, the zip itself) and
reads them with sdlite.pth (the pinned-release reader).
Reported: cases per family, outcomes by type (anything but SdliteError, or Pillow's error types carrying
it, is a finding), the slowest case and the peak RSS.
"""

from __future__ import annotations

import io
import json
import os
import resource
import shutil
import struct
import tempfile
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from sdlite import SdliteError, bitstream, compress_latents, decompress_latents, info
from sdlite.methods import entropy
from sdlite.methods.entropy import context, params
from sdlite.methods.entropy.transform import group_shapes

MODEL_ID = "f0f0f0f0f0f0f0f0"
_HEAD = struct.Struct(">4sBBBBB8sIIBHHH")
# (name, byte offset, struct format) of the version 3 and 4 header fields
FIELDS = [("version", 4, ">B"), ("method", 5, ">B"), ("latent_space", 6, ">B"), ("factor", 7, ">B"), ("scale", 8, ">B"),
          ("width", 17, ">I"), ("height", 21, ">I"), ("channels", 25, ">B"), ("latent_h", 26, ">H"), ("latent_w", 28, ">H"),
          ("params_len", 30, ">H")]
BOUNDARY = [0, 1, 2, 3, 7, 8, 9, 16, 63, 64, 65, 127, 128, 255, 256, 4095, 4096, 32767, 32768, 65535, 65536, 2**31 - 1, 2**32 - 1]
FAMILIES = ("stream", "entropy-params", "shapes", "version-3", "pillow", "bundle", "records", "pth")


def seed_streams(rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """Valid streams of every method and option family, small enough to decode in milliseconds."""
    streams = []
    for shape in [(4, 6, 9), (4, 13, 7), (16, 5, 5), (1, 1, 1), (4, 32, 48), (16, 12, 16)]:
        z = (rng.normal(0, 3, shape).cumsum(axis=2) / 2).astype(np.float32)
        size = (shape[2] * 8, shape[1] * 8)
        space = {4: "sd1", 16: "sd3"}.get(shape[0])
        streams.append((f"palette{shape}", compress_latents(z, model_id=MODEL_ID, latent_space=space, method="palette")))
        for quality in (5, 50, 95):
            streams.append((f"entropy-q{quality}{shape}", compress_latents(z, model_id=MODEL_ID, latent_space=space, quality=quality)))
        for levels in (0, 2):
            encoded = entropy.encode(z, quality=60, levels=levels, reconstruction_gains=True, latent_space=space)
            header = bitstream.Header(entropy.METHOD.id, MODEL_ID, size[0], size[1], shape, 8, encoded.params,
                                      latent_space=1 if shape[0] == 4 else 0)
            streams.append((f"entropy-l{levels}-gains{shape}", bitstream.pack(header, encoded.payload)))
        scaled = bitstream.Header(entropy.METHOD.id, MODEL_ID, size[0] * 3 // 2, size[1] * 3 // 2, shape, 8,
                                  entropy.encode(z, quality=40).params, latent_space=1 if shape[0] == 4 else 0, scale=12)
        try:
            bitstream.validate_geometry(scaled, max_pixels=None)
            streams.append((f"entropy-scaled{shape}", bitstream.pack(scaled, entropy.encode(z, quality=40).payload)))
        except SdliteError:
            pass
    return streams


def _recrc(body: bytes) -> bytes:
    return body + struct.pack(">I", zlib.crc32(body))


def _body(data: bytes) -> bytes:
    return data[:-4]


def _boundary(rng, width_bytes: int) -> int:
    value = int(rng.choice(BOUNDARY)) if rng.random() < 0.7 else int(rng.integers(0, 2 ** (8 * width_bytes)))
    return value & (2 ** (8 * width_bytes) - 1)


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One mutation of a valid version 3 or 4 stream; returns (description, bytes)."""
    kind = int(rng.integers(7))
    body = bytearray(_body(data))
    params_len = struct.unpack_from(">H", body, 30)[0]
    params_at, payload_len_at = _HEAD.size, _HEAD.size + params_len
    payload_at = payload_len_at + 4
    if kind == 0:  # a header field to a boundary or random value, CRC fixed
        name, offset, fmt = FIELDS[int(rng.integers(len(FIELDS)))]
        value = _boundary(rng, struct.calcsize(fmt))
        struct.pack_into(fmt, body, offset, value)
        return f"header {name}={value}", _recrc(bytes(body))
    if kind == 1:  # method parameters: inflate, alter, deflate again
        params_bytes = bytes(body[params_at:payload_len_at])
        try:
            raw = bytearray(zlib.decompress(params_bytes))
        except zlib.error:
            raw = bytearray(params_bytes)
        action = int(rng.integers(4))
        if action == 0 and raw:
            for _ in range(int(rng.integers(1, 4))):
                raw[int(rng.integers(len(raw)))] = int(rng.integers(256))
        elif action == 1:
            raw = raw[: int(rng.integers(len(raw) + 1))]
        elif action == 2:
            raw += rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        elif raw:  # extreme 16-bit fields: huge residual ranges, odd means
            at = int(rng.integers(len(raw) - 1))
            raw[at:at + 2] = struct.pack(">h", int(rng.choice([-32768, -4096, -1, 0, 1, 4095, 32767])))
        return f"params action {action}", _with_params(body, params_at, payload_len_at, bytes(raw), rng)
    if kind == 2:  # payload bits
        payload_len = struct.unpack_from(">I", body, payload_len_at)[0]
        for _ in range(int(rng.integers(1, 8))):
            if payload_len:
                at = payload_at + int(rng.integers(payload_len))
                body[at] ^= 1 << int(rng.integers(8))
        return "payload bits", _recrc(bytes(body))
    if kind == 3:  # payload cut or extended, length field kept consistent
        payload = bytes(body[payload_at:])
        payload = payload[: int(rng.integers(len(payload) + 1))] if rng.random() < 0.5 else payload + rng.integers(0, 256, int(rng.integers(1, 4096)), dtype=np.uint8).tobytes()
        rebuilt = body[:payload_len_at] + struct.pack(">I", len(payload)) + payload
        return "payload length", _recrc(bytes(rebuilt))
    if kind == 4:  # truncated anywhere, CRC left as is
        return "truncated", data[: int(rng.integers(len(data)))]
    if kind == 5:  # random bytes behind a valid magic and version
        version = int(rng.choice([3, 4]))
        return "random after magic", _recrc(b"SDLZ" + bytes([version]) + rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes())
    return "random file", rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()


def _with_params(body: bytearray, params_at: int, payload_len_at: int, raw: bytes, rng) -> bytes:
    packed = zlib.compress(raw, int(rng.integers(0, 10)))[:65535]
    rebuilt = body[:30] + struct.pack(">H", len(packed)) + body[32:params_at] + packed + body[payload_len_at:]
    return _recrc(bytes(rebuilt))


def mutate_entropy_params(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """Format version 4 and 5's parameters rewritten field by field (see sdlite.methods.entropy.params)."""
    header, _ = bitstream.unpack(data, max_pixels=None)
    body = bytearray(_body(data))
    params_at, payload_len_at = _HEAD.size, _HEAD.size + len(header.params)
    raw = bytearray(zlib.decompress(header.params))
    count = sum(s[0] for s in group_shapes(header.latent_shape, raw[0] if raw[0] in (0, 1, 2) else 1))
    bitmap_at = params.GLOBAL.size
    ranges_at = bitmap_at + (count + 7) // 8
    field = ["levels", "gains", "step", "flags", "transform", "bitmap", "range", "mean", "tail"][int(rng.integers(9))]
    if field == "levels":
        raw[0] = _boundary(rng, 1)
    elif field == "gains":
        raw[1 + int(rng.integers(2))] = _boundary(rng, 1)
    elif field == "step":
        struct.pack_into(">H", raw, 3, _boundary(rng, 2))
    elif field == "flags":
        raw[5] = _boundary(rng, 1)
    elif field == "transform":
        raw[6] = _boundary(rng, 1)
    elif field == "bitmap" and ranges_at > bitmap_at:
        raw[bitmap_at + int(rng.integers(ranges_at - bitmap_at))] ^= 1 << int(rng.integers(8))
    elif field == "range":
        lo, hi = int(rng.choice([-32768, -4096, -4095, -64, -1, 0, 1, 63, 4095, 32767])), int(rng.choice([-1, 0, 1, 2, 63, 4095, 4096, 32767]))
        if len(raw) >= ranges_at + 4:
            struct.pack_into(">hh", raw, ranges_at, lo, hi)
    elif field == "mean" and len(raw) > ranges_at + 6:
        struct.pack_into(">h", raw, ranges_at + 4, int(rng.choice([-32768, -1, 32767])))
    elif raw:
        at = int(rng.integers(max(1, len(raw) - 8), len(raw)))
        raw[at] = int(rng.integers(256))
    return f"entropy param {field}", _with_params(body, params_at, payload_len_at, bytes(raw), rng)


def extreme_shape(rng: np.random.Generator) -> tuple[str, bytes]:
    """A stream of extreme geometry: its parameters made for another shape or for this one."""
    channels = int(rng.choice([1, 4, 16, 64]))
    latent_h, latent_w = [(1, 65535), (65535, 1), (1, 1), (2, 32768), (256, 256), (128, 2048), (512, 512)][int(rng.integers(7))]
    space = {4: 1, 16: 3}.get(channels, 0) if rng.random() < 0.8 else int(rng.integers(6))
    z = np.zeros((channels, min(latent_h, 8), min(latent_w, 8)), np.float32)
    encoded = entropy.encode(z + rng.normal(0, 3, z.shape).astype(np.float32), quality=50)
    header = bitstream.Header(entropy.METHOD.id, MODEL_ID, latent_w * 8, latent_h * 8, (channels, latent_h, latent_w), 8, encoded.params,
                              latent_space=space)
    payload = encoded.payload if rng.random() < 0.5 else bytes(int(rng.integers(0, 64)) * 4)
    return f"shape {channels}x{latent_h}x{latent_w} space {space}", bitstream.pack(header, payload)


def legacy_entropy_stream(channels: int, latent_h: int, latent_w: int, *, levels: int, rmin: int, rmax: int, decay=(255, 0),
                          payload: bytes = b"\0\0\0\0", step: int = 1024, gains: bool = False, weights=None, space: int = 0) -> bytes:
    """A format version 3 entropy stream in the old layout, every plane with the given header fields (as
    an attacker writes one); weights: None for zeros, or a generator of int8 arrays."""
    sizes = [s[0] for s in group_shapes((channels, latent_h, latent_w), levels)]
    raw = bytearray(params.GLOBAL_V3.pack(levels, 28, 21, step, int(gains)))
    for _ in range(sum(sizes)):
        raw += params.PLANE_V3.pack(0, rmin, rmax, *decay)
    for size in sizes:
        for p in range(size):
            raw += bytes(context.n_weights(p)) if weights is None else weights(context.n_weights(p)).tobytes()
    if gains:
        raw += bytes([128]) * sum(sizes)
    packed = zlib.compress(bytes(raw), 6)
    head = _HEAD.pack(bitstream.MAGIC, 3, 2, space, 8, 8, bytes(8), latent_w * 8, latent_h * 8, channels, latent_h, latent_w, len(packed))
    return _recrc(head + packed + struct.pack(">I", len(payload)) + payload)


def version_3_stream(rng: np.random.Generator) -> tuple[str, bytes]:
    """An old-layout (format version 3) entropy stream with hostile plane headers."""
    channels = int(rng.choice([1, 4, 16]))
    latent_h, latent_w = [(2, 2), (1, 300), (16, 16), (1, 65535)][int(rng.integers(4))]
    levels = int(rng.integers(3))
    rmin = int(rng.choice([-32768, -4096, -100, -1, 0, 5, 32766]))
    width = int(rng.choice([1, 2, 100, 4095, 5000]))
    payload = rng.integers(0, 256, int(rng.integers(0, 16)) * 4, dtype=np.uint8).tobytes()
    data = legacy_entropy_stream(channels, latent_h, latent_w, levels=levels, rmin=rmin, rmax=max(-32768, min(32767, rmin + width)),
                                 decay=(int(rng.integers(256)), int(rng.integers(32))), payload=payload, step=int(rng.integers(1, 65536)),
                                 gains=bool(rng.integers(2)), weights=lambda n: rng.integers(-128, 128, n, dtype=np.int8),
                                 space=1 if channels == 4 else 0)
    return f"version 3 {channels}x{latent_h}x{latent_w} levels {levels} range {rmin}+{width}", data


def seed_pth_archives(rng: np.random.Generator) -> list[bytes]:
    """Small torch state-dict archives written by hand (the layout torch.save writes: PREFIX/data.pkl, a
    protocol-2 pickle of an OrderedDict of _rebuild_tensor_v2 calls over persistent storages, PREFIX/data/KEY,
    PREFIX/byteorder), so the fuzz needs no torch."""
    import zipfile

    seeds = []
    for dtype, storage, count in (("<f4", "FloatStorage", 3), ("<f2", "HalfStorage", 5)):
        tensors = {f"{i + 1}.weight": rng.normal(0, 1, (2, 3)).astype(dtype) for i in range(count)}
        body = bytearray(b"\x80\x02ccollections\nOrderedDict\nq\x00)Rq\x01(")
        for key, (name, array) in enumerate(tensors.items()):
            name_bytes = name.encode()
            body += b"X" + struct.pack("<I", len(name_bytes)) + name_bytes
            body += b"ctorch._utils\n_rebuild_tensor_v2\n("
            body += b"(X\x07\x00\x00\x00storagectorch\n" + storage.encode() + b"\nX" + struct.pack("<I", len(str(key))) + str(key).encode()
            body += b"X\x03\x00\x00\x00cpuK\x06tQ"  # persistent id ('storage', type, key, 'cpu', 6)
            body += b"K\x00(K\x02K\x03t(K\x03K\x01t\x89ccollections\nOrderedDict\n)RtR"
        body += b"u."
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            archive.writestr("archive/data.pkl", bytes(body))
            archive.writestr("archive/byteorder", "little")
            archive.writestr("archive/version", "3\n")
            for key, array in enumerate(tensors.values()):
                archive.writestr(f"archive/data/{key}", array.tobytes())
        seeds.append(buffer.getvalue())
    return seeds


def mutate_pth(base: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """A state-dict archive with its pickle, members or zip bytes changed."""
    import zipfile

    kind = ["archive-bytes", "pickle-bytes", "global", "storage-key", "drop-member", "truncate", "compress"][int(rng.integers(7))]
    if kind == "archive-bytes":
        data = bytearray(base)
        for _ in range(int(rng.integers(1, 8))):
            data[int(rng.integers(len(data)))] = int(rng.integers(256))
        return kind, bytes(data)
    if kind == "truncate":
        return kind, base[: int(rng.integers(len(base)))]
    members = {}
    with zipfile.ZipFile(io.BytesIO(base)) as archive:
        for name in archive.namelist():
            members[name] = archive.read(name)
    pickle_bytes = bytearray(members["archive/data.pkl"])
    if kind == "pickle-bytes":
        for _ in range(int(rng.integers(1, 6))):
            pickle_bytes[int(rng.integers(len(pickle_bytes)))] = int(rng.integers(256))
    elif kind == "global":
        swap = [b"os\nsystem", b"builtins\neval", b"torch\nLongStorage", b"numpy\nndarray", b"collections\ndefaultdict"][int(rng.integers(5))]
        pickle_bytes = bytearray(bytes(pickle_bytes).replace(b"torch._utils\n_rebuild_tensor_v2", swap, 1))
    elif kind == "storage-key":
        pickle_bytes = bytearray(bytes(pickle_bytes).replace(b"X\x01\x00\x00\x001", b"X\x01\x00\x00\x000", 1))
    elif kind == "drop-member":
        members.pop(sorted(m for m in members if "/data/" in m)[0])
    members["archive/data.pkl"] = bytes(pickle_bytes)
    buffer = io.BytesIO()
    method = zipfile.ZIP_DEFLATED if kind == "compress" else zipfile.ZIP_STORED
    with zipfile.ZipFile(buffer, "w", method) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return kind, buffer.getvalue()


def _check_pth(data: bytes, path: Path) -> None:
    from sdlite import pth

    path.write_bytes(data)
    pth.read_state_dict(path, max_bytes=1 << 20)


def _check_stream(data: bytes) -> None:
    info(data)
    decompress_latents(data)


def _fake_model(folder: Path):
    """A Model whose sessions are numpy (8x8 nearest upsampling): Pillow's open and load without a network."""
    from sdlite.model import Model

    class Spec:
        def __init__(self, name):
            self.name, self.type, self.shape = name, "tensor(float)", ()

    class Decoder:
        def get_inputs(self):
            return [Spec("latent_sample")]

        def get_outputs(self):
            return [Spec("sample")]

        def run(self, names, feed):
            z = feed["latent_sample"][:, :3] / 10.0
            return [np.repeat(np.repeat(z, 8, axis=2), 8, axis=3).astype(np.float32)]

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(json.dumps({
        "bundle_format": 1, "model_id": MODEL_ID, "latent_channels": 4, "downsample_factor": 8, "scaling_factor": 0.18215,
        "latent_space": {"name": "sd1"}, "components": {"vae_decoder": {"file": "vae_decoder/model.onnx", "files": []}}}))
    return Model(folder, session_overrides={"vae_decoder": Decoder()})


class NotSdz(SdliteError):
    """Pillow found no SDZ magic and named no format: its own UnidentifiedImageError, as for any non-image."""


def _check_pillow(data: bytes) -> None:
    from PIL import Image, UnidentifiedImageError

    try:
        # Only the SDZ plugin: Pillow's other plugins have their own errors on random bytes (its IPTC reader
        # raised OSError on a file starting with 0x1c in the first 100k run), which are Pillow's, not sdlite's.
        with Image.open(io.BytesIO(data), formats=["SDZ"]) as image:
            image.load()
    except UnidentifiedImageError as exc:
        if data[:4] == bitstream.MAGIC and not isinstance(exc, SdliteError):
            raise  # SDZ data must fail with sdlite's message
        if not isinstance(exc, SdliteError):
            raise NotSdz(str(exc)) from None
        raise


def _hostile_manifest(rng: np.random.Generator, folder: Path) -> str:
    """A bundle folder whose manifest (or config.json) has one hostile change; returns its description."""
    if folder.exists():
        shutil.rmtree(folder)
    (folder / "vae_decoder").mkdir(parents=True)
    (folder / "vae_decoder" / "model.onnx").write_bytes(b"graph")
    entry = {"path": "vae_decoder/model.onnx", "sha256": "0" * 64, "size": 5}
    manifest = {"bundle_format": 1, "model_id": "0123456789abcdef", "latent_channels": 4, "downsample_factor": 8, "scaling_factor": 0.18215,
                "components": {"vae_decoder": {"file": "vae_decoder/model.onnx", "files": [entry]}}}
    values = [None, 0, -1, 1e9, 1e400, "abc", "", [], {}, [1, 2], {"a": 1}, True, "../x", "/etc/passwd", "a/../../b", 4.5]
    keys = ["bundle_format", "model_id", "latent_channels", "downsample_factor", "scaling_factor", "shift_factor", "components",
            "latent_space", "uncond_embedding", "scheduler", "extra_files", "quantization"]
    action = int(rng.integers(6))
    if action == 0:
        key = keys[int(rng.integers(len(keys)))]
        manifest[key] = values[int(rng.integers(len(values)))]
        description = f"manifest {key}"
    elif action == 1:
        field = ["file", "files"][int(rng.integers(2))]
        manifest["components"]["vae_decoder"][field] = values[int(rng.integers(len(values)))]
        description = f"component {field}"
    elif action == 2:
        field = ["path", "sha256", "size"][int(rng.integers(3))]
        entry[field] = values[int(rng.integers(len(values)))]
        description = f"file entry {field}"
    elif action == 3:
        depth = int(rng.choice([10, 1000, 100_000]))
        (folder / "manifest.json").write_text("[" * depth + "]" * depth)
        return f"nested {depth}"
    elif action == 4:
        (folder / "manifest.json").unlink(missing_ok=True)
        config = {"latent_channels": 4, "scaling_factor": 0.18215, "block_out_channels": [1, 2, 3, 4]}
        key = ["latent_channels", "scaling_factor", "shift_factor", "block_out_channels", "latent_space", "downsample_factor"][int(rng.integers(6))]
        config[key] = values[int(rng.integers(len(values)))]
        (folder / "vae_decoder" / "config.json").write_text(json.dumps(config))
        return f"config.json {key}"
    else:
        (folder / "manifest.json").write_bytes(rng.integers(0, 256, int(rng.integers(0, 400)), dtype=np.uint8).tobytes())
        return "random manifest"
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return description


def _check_bundle(folder: Path) -> None:
    from sdlite import load_model

    model = load_model(folder)
    model.session("vae_decoder")


def _hostile_records(rng: np.random.Generator, folder: Path) -> str:
    from sdlite import verified

    records = folder / verified.RECORDS_FILE
    folder.mkdir(parents=True, exist_ok=True)
    if records.is_symlink() or records.exists():
        records.unlink()
    model = folder / "model.onnx"
    if not model.exists():
        model.write_bytes(b"weights")
        model.chmod(0o444)
    key = os.path.realpath(model)
    status = os.stat(key)
    identity = [status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns, status.st_ctime_ns]
    action = int(rng.integers(6))
    if action == 0:
        depth = int(rng.choice([10, 1000, 100_000]))
        records.write_text("[" * depth + "]" * depth)
    elif action == 1:
        records.write_text(json.dumps({key: {"identity": [str(v) for v in identity], "sha256": 5}}))
    elif action == 2:
        records.write_text(json.dumps({key: {"identity": identity, "sha256": "f" * 64}}))
        records.chmod(0o666)  # forged by someone else: ignored
    elif action == 3:
        os.mkfifo(records)
    elif action == 4:
        records.write_bytes(rng.integers(0, 256, int(rng.integers(0, 2000)), dtype=np.uint8).tobytes())
    else:
        os.symlink(folder / "elsewhere", records)
    return ["nested", "wrong types", "forged by others", "fifo", "random", "symlink"][action]


def run(cases: int, seed: int = 0, progress=None, families: tuple = FAMILIES) -> dict:
    from sdlite import pillow, verified
    from sdlite import files

    rng = np.random.default_rng(seed)
    streams = seed_streams(rng)
    pth_seeds = seed_pth_archives(rng)
    # format versions 4 and 5 share the entropy parameters' layout
    layout4 = [(name, data) for name, data in streams if data[4] >= 4 and name.startswith("entropy")]
    outcomes: Counter = Counter()
    per_family: Counter = Counter()
    findings = []
    slowest = (0.0, "")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    scratch = Path(tempfile.mkdtemp(prefix="sdlite-fuzz-"))
    previous_cache = os.environ.get(verified.CACHE_DIR_ENV)
    os.environ[verified.CACHE_DIR_ENV] = str(scratch / "records")
    pillow.set_model(_fake_model(scratch / "pillow-model"))
    started = time.perf_counter()
    try:
        for case in range(cases):
            family = families[int(rng.integers(len(families)))]
            per_family[family] += 1
            name = family
            if family == "stream":
                name, base = streams[int(rng.integers(len(streams)))]
                description, data = mutate(base, rng)
                check = lambda data=data: _check_stream(data)  # noqa: E731
            elif family == "entropy-params":
                name, base = layout4[int(rng.integers(len(layout4)))]
                description, data = mutate_entropy_params(base, rng)
                check = lambda data=data: _check_stream(data)  # noqa: E731
            elif family == "shapes":
                description, data = extreme_shape(rng)
                check = lambda data=data: _check_stream(data)  # noqa: E731
            elif family == "version-3":
                description, data = version_3_stream(rng)
                check = lambda data=data: _check_stream(data)  # noqa: E731
            elif family == "pillow":
                name, base = streams[int(rng.integers(len(streams)))]
                description, data = mutate(base, rng) if rng.random() < 0.8 else ("valid", base)
                check = lambda data=data: _check_pillow(data)  # noqa: E731
            elif family == "pth":
                description, data = mutate_pth(pth_seeds[int(rng.integers(len(pth_seeds)))], rng)
                check = lambda data=data: _check_pth(data, scratch / "case.pth")  # noqa: E731
            elif family == "bundle":
                description = _hostile_manifest(rng, scratch / "bundle")
                data = b""
                check = lambda: _check_bundle(scratch / "bundle")  # noqa: E731
            else:
                description = _hostile_records(rng, scratch / "records")
                data = b""
                check = lambda: verified.sha256_of(scratch / "records" / "model.onnx", files.file_sha256)  # noqa: E731
            t0 = time.perf_counter()
            try:
                check()
                outcomes["accepted"] += 1
            except SdliteError as exc:
                outcomes[type(exc).__name__] += 1
            except Exception as exc:  # noqa: BLE001 - a finding: anything but SdliteError
                outcomes[type(exc).__name__] += 1
                findings.append({"case": case, "family": family, "stream": name, "mutation": description,
                                 "error": f"{type(exc).__name__}: {exc}"[:300], "data": data.hex() if len(data) < 4096 else None})
            elapsed = time.perf_counter() - t0
            if elapsed > slowest[0]:
                slowest = (elapsed, f"case {case}: {family}, {name}, {description}, {len(data)} bytes")
            if progress and (case + 1) % 1000 == 0:
                progress(case + 1, cases)
    finally:
        pillow.set_model(None)
        if previous_cache is None:
            os.environ.pop(verified.CACHE_DIR_ENV, None)
        else:
            os.environ[verified.CACHE_DIR_ENV] = previous_cache
        shutil.rmtree(scratch, ignore_errors=True)
    return {
        "cases": cases, "seed": seed, "seed_streams": len(streams), "seconds": time.perf_counter() - started,
        "families": dict(per_family), "outcomes": dict(outcomes.most_common()), "findings": findings,
        "slowest_case_s": slowest[0], "slowest_case": slowest[1],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mb": rss_before,
    }


def report(result: dict, out_dir: Path | None = None) -> str:
    lines = [
        f"{result['cases']} cases (seed {result['seed']}, {result['seed_streams']} seed streams) in {result['seconds']:.0f} s",
        "families: " + ", ".join(f"{k} {v}" for k, v in sorted(result["families"].items())),
        "outcomes: " + ", ".join(f"{k} {v}" for k, v in result["outcomes"].items()),
        f"exceptions outside SdliteError: {len(result['findings'])}",
        f"slowest case: {result['slowest_case_s'] * 1000:.0f} ms ({result['slowest_case']})",
        f"peak RSS: {result['peak_rss_mb']:.0f} MB (before the first case: {result['rss_before_mb']:.0f} MB)",
    ]
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "fuzz.json").write_text(json.dumps(result, indent=1))
        (out_dir / "fuzz.md").write_text("\n".join(lines) + "\n")
    return "\n".join(lines)
