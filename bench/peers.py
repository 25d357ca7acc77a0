"""Peer codecs through Pillow, each fitted to a byte budget: the highest quality whose file fits."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image


@dataclass(frozen=True)
class Peer:
    name: str
    format: str
    options: dict
    qualities: tuple[int, int] = (1, 100)

    def encode(self, image: Image.Image, quality: int) -> bytes:
        buffer = io.BytesIO()
        image.save(buffer, format=self.format, quality=quality, **self.options)
        return buffer.getvalue()

    def decode(self, data: bytes) -> np.ndarray:
        with Image.open(io.BytesIO(data)) as opened:
            return np.asarray(opened.convert("RGB"))

    def fit(self, image: Image.Image, budget: int):
        """(bytes, quality) of the best quality that fits, or None when even the lowest does not."""
        low, high = self.qualities
        best = None
        while low <= high:
            middle = (low + high) // 2
            data = self.encode(image, middle)
            if len(data) <= budget:
                best, low = (data, middle), middle + 1
            else:
                high = middle - 1
        return best


def available_peers() -> list[Peer]:
    from PIL import features

    peers = [
        Peer("JPEG", "JPEG", {"optimize": True, "subsampling": 2}),
        Peer("WebP", "WEBP", {"method": 6}, (0, 100)),
    ]
    if features.check("avif"):
        peers.append(Peer("AVIF", "AVIF", {"speed": 6}, (0, 100)))
    try:
        import pillow_jxl  # noqa: F401 - registers the JXL format with Pillow

        peers.append(Peer("JPEG XL", "JXL", {"effort": 7}, (0, 99)))
    except ImportError:
        pass
    return peers


def smallest(peer: Peer, image: Image.Image) -> int:
    """Bytes at the lowest quality (what an unreachable budget would have needed)."""
    return len(peer.encode(image, peer.qualities[0]))
