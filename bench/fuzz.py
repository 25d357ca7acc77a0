"""Fuzzing the stream decoder: structure-aware mutations of valid streams of every method, and random files.

python -m bench fuzz --cases 100000 [--seed 0] [--out bench-out/fuzz]

Each case runs info() and decompress_latents() (default max_pixels) on one mutated stream. Mutations
know the container's layout: a header field set to a boundary or random value (with the CRC fixed, so
the mutation reaches the field checks), method parameters inflated and altered (bytes flipped, cut,
extended, re-deflated), payload bits flipped, cut or extended, and plain random bytes. Reported: cases
run, exceptions by type (anything not an SdliteError is a finding), the slowest case, and the peak RSS.
"""

from __future__ import annotations

import json
import resource
import struct
import time
import zlib
from collections import Counter
from pathlib import Path

import numpy as np

from sdlite import SdliteError, bitstream, compress_latents, decompress_latents, info
from sdlite.methods import entropy

MODEL_ID = "f0f0f0f0f0f0f0f0"
_HEAD = struct.Struct(">4sBBBBB8sIIBHHH")
# (name, byte offset, struct format) of the version 3 header fields
FIELDS = [("version", 4, ">B"), ("method", 5, ">B"), ("latent_space", 6, ">B"), ("factor", 7, ">B"), ("scale", 8, ">B"),
          ("width", 17, ">I"), ("height", 21, ">I"), ("channels", 25, ">B"), ("latent_h", 26, ">H"), ("latent_w", 28, ">H"),
          ("params_len", 30, ">H")]
BOUNDARY = [0, 1, 2, 3, 7, 8, 9, 16, 63, 64, 65, 127, 128, 255, 256, 4095, 65535, 65536, 2**31 - 1, 2**32 - 1]


def seed_streams(rng: np.random.Generator) -> list[tuple[str, bytes]]:
    """Valid streams of every method and option family, small enough to decode in milliseconds."""
    streams = []
    for shape in [(4, 6, 9), (4, 13, 7), (16, 5, 5), (1, 1, 1), (4, 32, 48)]:
        z = (rng.normal(0, 3, shape).cumsum(axis=2) / 2).astype(np.float32)
        size = (shape[2] * 8, shape[1] * 8)
        streams.append((f"palette{shape}", compress_latents(z, model_id=MODEL_ID, latent_space="sd1" if shape[0] == 4 else None, method="palette")))
        for quality in (5, 50, 95):
            streams.append((f"entropy-q{quality}{shape}", compress_latents(z, model_id=MODEL_ID, quality=quality)))
        for levels in (0, 2):
            encoded = entropy.encode(z, quality=60, levels=levels, reconstruction_gains=True)
            header = bitstream.Header(entropy.METHOD.id, MODEL_ID, size[0], size[1], shape, 8, encoded.params, latent_space=1)
            streams.append((f"entropy-l{levels}-gains{shape}", bitstream.pack(header, encoded.payload)))
        scaled = bitstream.Header(entropy.METHOD.id, MODEL_ID, size[0] * 3 // 2, size[1] * 3 // 2, shape, 8,
                                  entropy.encode(z, quality=40).params, latent_space=1, scale=12)
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


def mutate(data: bytes, rng: np.random.Generator) -> tuple[str, bytes]:
    """One mutation of a valid version 3 stream; returns (description, bytes)."""
    kind = int(rng.integers(7))
    body = bytearray(_body(data))
    params_len = struct.unpack_from(">H", body, 30)[0]
    params_at, payload_len_at = _HEAD.size, _HEAD.size + params_len
    payload_at = payload_len_at + 4
    if kind == 0:  # a header field to a boundary or random value, CRC fixed
        name, offset, fmt = FIELDS[int(rng.integers(len(FIELDS)))]
        width = struct.calcsize(fmt)
        value = int(rng.choice(BOUNDARY)) if rng.random() < 0.7 else int(rng.integers(0, 2 ** (8 * width)))
        value &= 2 ** (8 * width) - 1
        struct.pack_into(fmt, body, offset, value)
        return f"header {name}={value}", _recrc(bytes(body))
    if kind == 1:  # method parameters: inflate, alter, deflate again
        params = bytes(body[params_at:payload_len_at])
        try:
            raw = bytearray(zlib.decompress(params))
        except zlib.error:
            raw = bytearray(params)
        action = int(rng.integers(4))
        if action == 0 and raw:
            for _ in range(int(rng.integers(1, 4))):
                raw[int(rng.integers(len(raw)))] = int(rng.integers(256))
        elif action == 1:
            raw = raw[: int(rng.integers(len(raw) + 1))]
        elif action == 2:
            raw += rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        elif raw:  # extreme plane headers: huge residual ranges, zero gains
            at = int(rng.integers(len(raw) - 1))
            raw[at:at + 2] = struct.pack(">h", int(rng.choice([-32768, -1, 0, 1, 32767])))
        packed = zlib.compress(bytes(raw), int(rng.integers(0, 10)))
        rebuilt = body[:30] + struct.pack(">H", min(len(packed), 65535)) + body[32:params_at] + packed[:65535] + body[payload_len_at:]
        return f"params action {action}", _recrc(bytes(rebuilt))
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
        return "random after magic", _recrc(b"SDLZ\x03" + rng.integers(0, 256, int(rng.integers(0, 200)), dtype=np.uint8).tobytes())
    return "random file", rng.integers(0, 256, int(rng.integers(0, 300)), dtype=np.uint8).tobytes()


def run(cases: int, seed: int = 0, progress=None) -> dict:
    rng = np.random.default_rng(seed)
    streams = seed_streams(rng)
    outcomes: Counter = Counter()
    findings = []
    slowest = (0.0, "")
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    started = time.perf_counter()
    for case in range(cases):
        name, base = streams[int(rng.integers(len(streams)))]
        description, data = mutate(base, rng)
        t0 = time.perf_counter()
        try:
            info(data)
            decompress_latents(data)
            outcomes["decoded"] += 1
        except SdliteError as exc:
            outcomes[type(exc).__name__] += 1
        except Exception as exc:  # noqa: BLE001 - a finding: anything but SdliteError
            outcomes[type(exc).__name__] += 1
            findings.append({"case": case, "stream": name, "mutation": description, "error": f"{type(exc).__name__}: {exc}"[:300],
                             "data": data.hex() if len(data) < 4096 else None})
        elapsed = time.perf_counter() - t0
        if elapsed > slowest[0]:
            slowest = (elapsed, f"case {case}: {name}, {description}, {len(data)} bytes")
        if progress and (case + 1) % 1000 == 0:
            progress(case + 1, cases)
    return {
        "cases": cases, "seed": seed, "seed_streams": len(streams), "seconds": time.perf_counter() - started,
        "outcomes": dict(outcomes.most_common()), "findings": findings,
        "slowest_case_s": slowest[0], "slowest_case": slowest[1],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "rss_before_mb": rss_before,
    }


def report(result: dict, out_dir: Path | None = None) -> str:
    lines = [
        f"{result['cases']} cases (seed {result['seed']}, {result['seed_streams']} seed streams) in {result['seconds']:.0f} s",
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
