"""Check exported ONNX components against PyTorch on fixed, seeded inputs."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .errors import ValidationError

log = logging.getLogger("export")

VALIDATION_SIDE = 64
"""Image side used for validation (small: full-size SD at 512x512 would take minutes on CPU)."""
DEFAULT_ATOL = {"fp32": 2e-3, "fp16": 5e-2}
"""Max abs difference allowed, relative to max(1, max |reference|)."""


@dataclass(frozen=True)
class ValidationResult:
    component: str
    max_abs_diff: float
    tolerance: float

    @property
    def ok(self) -> bool:
        return self.max_abs_diff <= self.tolerance


def reference_inputs(component: str, parts: dict, factor: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    side = VALIDATION_SIDE // factor
    vae = parts["vae"]
    if component == "vae_encoder":
        return {"sample": rng.uniform(-1, 1, (1, 3, VALIDATION_SIDE, VALIDATION_SIDE)).astype(np.float32)}
    if component == "vae_decoder":
        return {"latent_sample": rng.normal(0, 4, (1, vae.config.latent_channels, side, side)).astype(np.float32)}
    unet = parts["unet"]
    return {
        "sample": rng.normal(0, 1, (1, unet.config.in_channels, side, side)).astype(np.float32),
        "timestep": np.array(40, dtype=np.float32),
        "encoder_hidden_states": parts["uncond"].astype(np.float32),
    }


def torch_reference(component: str, parts: dict, inputs: dict[str, np.ndarray], dtype: str) -> np.ndarray:
    import torch

    with torch.no_grad():
        if component in parts.get("vae_reference", {}):  # an AutoencoderTiny: the wrapper that was exported
            name = "sample" if component == "vae_encoder" else "latent_sample"
            out = parts["vae_reference"][component](torch.from_numpy(inputs[name]))
        elif component == "vae_encoder":
            out = parts["vae"].encode(torch.from_numpy(inputs["sample"])).latent_dist.parameters
        elif component == "vae_decoder":
            out = parts["vae"].decode(torch.from_numpy(inputs["latent_sample"])).sample
        else:
            unet = parts["unet"]
            torch_dtype = next(unet.parameters()).dtype
            out = unet(
                torch.from_numpy(inputs["sample"]).to(torch_dtype),
                torch.tensor(float(inputs["timestep"])),
                encoder_hidden_states=torch.from_numpy(inputs["encoder_hidden_states"]).to(torch_dtype),
            ).sample
    return out.float().numpy()


def onnx_output(path, inputs: dict[str, np.ndarray]) -> np.ndarray:
    import onnxruntime as ort

    from sdlite.bundle import ONNX_DTYPES

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {spec.name: inputs[spec.name].astype(ONNX_DTYPES.get(spec.type, np.float32)) for spec in session.get_inputs()}
    (out,) = session.run([session.get_outputs()[0].name], feed)
    return np.asarray(out, dtype=np.float32)


def validate_component(component: str, path, parts: dict, *, factor: int, dtype: str = "fp32", atol: float | None = None) -> ValidationResult:
    """Compare the ONNX file at path with PyTorch; raises ValidationError beyond tolerance."""
    inputs = reference_inputs(component, parts, factor)
    expected = torch_reference(component, parts, inputs, dtype)
    got = onnx_output(path, inputs)
    if got.shape != expected.shape:
        raise ValidationError(f"{component}: ONNX output shape {got.shape} differs from PyTorch's {expected.shape}")
    diff = float(np.max(np.abs(got - expected))) if got.size else 0.0
    if not np.isfinite(diff):
        diff = float("inf")
    base = DEFAULT_ATOL[dtype] if atol is None else atol
    result = ValidationResult(component, diff, base * max(1.0, float(np.max(np.abs(expected)))))
    log.info("validated %s: max abs diff %.3g (tolerance %.3g)", component, result.max_abs_diff, result.tolerance)
    if not result.ok:
        raise ValidationError(
            f"{component}: ONNX differs from PyTorch by {result.max_abs_diff:.3g} (tolerance {result.tolerance:.3g}); "
            "pass --atol to loosen it or --no-validate to skip validation"
        )
    return result
