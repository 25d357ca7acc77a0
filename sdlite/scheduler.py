"""DDIM denoising maths in numpy, configured from a diffusers scheduler_config.json.

The decoder uses it to clean dequantized latents: treat them as the clean sample at a low noise level
(strength * num_train_timesteps), add seeded noise of that level, and run a few deterministic (eta = 0)
DDIM steps back to t = 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import OptionError

DEFAULT_STRENGTH = 0.04
"""Start the denoising at 4 % of the training timesteps (the seed method's level)."""
DEFAULT_STEPS = 2
"""U-Net calls on decode."""
MAX_TRAIN_TIMESTEPS = 100_000
"""Bound on a scheduler config's num_train_timesteps (SD uses 1000): its tables are built from it."""


def _fraction(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise OptionError(f"{name} must be a number between 0 and 1, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class DDIM:
    alphas_cumprod: np.ndarray  # float64, one per training timestep
    prediction_type: str = "epsilon"

    @classmethod
    def from_config(cls, config: dict) -> "DDIM":
        """From a diffusers scheduler config; every value is checked (a bundle may be hostile)."""
        steps = config.get("num_train_timesteps", 1000)
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= MAX_TRAIN_TIMESTEPS:
            raise OptionError(f"num_train_timesteps must be an integer from 1 to {MAX_TRAIN_TIMESTEPS}, got {steps!r}")
        start, end = _fraction(config.get("beta_start", 0.00085), "beta_start"), _fraction(config.get("beta_end", 0.012), "beta_end")
        schedule = config.get("beta_schedule", "scaled_linear")
        if config.get("trained_betas"):
            trained = config["trained_betas"]
            if not isinstance(trained, list) or not 1 <= len(trained) <= MAX_TRAIN_TIMESTEPS:
                raise OptionError(f"trained_betas must be a list of 1 to {MAX_TRAIN_TIMESTEPS} numbers")
            betas = np.asarray([_fraction(b, "trained_betas") for b in trained], dtype=np.float64)
        elif schedule == "scaled_linear":
            betas = np.linspace(start**0.5, end**0.5, steps, dtype=np.float64) ** 2
        elif schedule == "linear":
            betas = np.linspace(start, end, steps, dtype=np.float64)
        else:
            raise OptionError(f"unsupported beta_schedule {schedule!r}; supported: scaled_linear, linear")
        prediction = config.get("prediction_type", "epsilon")
        if prediction not in ("epsilon", "v_prediction"):
            raise OptionError(f"unsupported prediction_type {prediction!r}; supported: epsilon, v_prediction")
        return cls(np.cumprod(1.0 - betas), prediction)

    def timesteps(self, strength: float, steps: int) -> list[int]:
        if not 0.0 < strength <= 1.0:
            raise OptionError(f"denoise strength must be in (0, 1], got {strength}")
        if steps < 1:
            raise OptionError(f"denoise steps must be at least 1, got {steps}")
        start = max(1, min(len(self.alphas_cumprod) - 1, round(strength * len(self.alphas_cumprod))))
        return sorted({int(round(t)) for t in np.linspace(start, 0, steps + 1)[:-1]}, reverse=True)

    def add_noise(self, sample: np.ndarray, t: int, noise: np.ndarray) -> np.ndarray:
        a = self.alphas_cumprod[t]
        return (np.sqrt(a) * sample + np.sqrt(1.0 - a) * noise).astype(np.float32)

    def step(self, model_output: np.ndarray, t: int, t_prev: int, sample: np.ndarray) -> np.ndarray:
        """One eta=0 DDIM step from t to t_prev (t_prev < 0 means the clean sample)."""
        a_t = self.alphas_cumprod[t]
        a_prev = self.alphas_cumprod[t_prev] if t_prev >= 0 else 1.0
        out = model_output.astype(np.float64)
        x = sample.astype(np.float64)
        if self.prediction_type == "epsilon":
            eps = out
            x0 = (x - np.sqrt(1.0 - a_t) * eps) / np.sqrt(a_t)
        else:  # v_prediction
            x0 = np.sqrt(a_t) * x - np.sqrt(1.0 - a_t) * out
            eps = np.sqrt(a_t) * out + np.sqrt(1.0 - a_t) * x
        return (np.sqrt(a_prev) * x0 + np.sqrt(1.0 - a_prev) * eps).astype(np.float32)
