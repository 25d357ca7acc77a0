"""Fake onnxruntime sessions: a linear 'VAE' (8x8 average pooling <-> nearest upsampling) that lets the
pipeline be tested without any model file or ONNX at all."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class _Spec:
    name: str
    type: str = "tensor(float)"
    shape: tuple = ()


class FakeEncoder:
    calls = 0

    def get_inputs(self):
        return [_Spec("sample")]

    def get_outputs(self):
        return [_Spec("latent_parameters")]

    def run(self, names, feed):
        type(self).calls += 1
        x = feed["sample"]
        b, c, h, w = x.shape
        pooled = x.reshape(b, c, h // 8, 8, w // 8, 8).mean(axis=(3, 5))
        mean = np.concatenate([pooled, pooled[:, :1]], axis=1) * 10.0  # 4 channels, raw-latent-like scale
        return [np.concatenate([mean, np.full_like(mean, -30.0)], axis=1).astype(np.float32)]


class FakeDecoder:
    def get_inputs(self):
        return [_Spec("latent_sample")]

    def get_outputs(self):
        return [_Spec("sample")]

    def run(self, names, feed):
        z = feed["latent_sample"][:, :3] / 10.0
        return [np.repeat(np.repeat(z, 8, axis=2), 8, axis=3).astype(np.float32)]


def fake_bundle(folder: Path, model_id: str = "0123456789abcdef") -> Path:
    """A folder with just a manifest; pair it with fake_sessions()."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.json").write_text(
        json.dumps(
            {
                "bundle_format": 1,
                "model_id": model_id,
                "components": {"vae_encoder": {"file": "vae_encoder/model.onnx"}, "vae_decoder": {"file": "vae_decoder/model.onnx"}},
                "scaling_factor": 0.18215,
                "shift_factor": None,
                "latent_channels": 4,
                "downsample_factor": 8,
            }
        )
    )
    return folder


def fake_sessions() -> dict:
    return {"vae_encoder": FakeEncoder(), "vae_decoder": FakeDecoder()}
