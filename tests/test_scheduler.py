"""The numpy DDIM used for U-Net denoising on decode."""

import numpy as np
import pytest

from sdlite import OptionError
from sdlite.scheduler import DDIM

from .conftest import EXPORT_STACK

SD_CONFIG = {"beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear", "num_train_timesteps": 1000}


def test_a_step_with_the_true_noise_recovers_the_clean_sample():
    ddim = DDIM.from_config(SD_CONFIG)
    rng = np.random.default_rng(0)
    clean, noise = rng.normal(size=(1, 4, 6, 6)).astype(np.float32), rng.normal(size=(1, 4, 6, 6)).astype(np.float32)
    for t in (40, 400, 999):
        noisy = ddim.add_noise(clean, t, noise)
        assert np.allclose(ddim.step(noise, t, -1, noisy), clean, atol=1e-4)
        # v-prediction: the model predicts v = sqrt(a) * noise - sqrt(1 - a) * clean
        v_ddim = DDIM(ddim.alphas_cumprod, "v_prediction")
        a = ddim.alphas_cumprod[t]
        v = (np.sqrt(a) * noise - np.sqrt(1 - a) * clean).astype(np.float32)
        assert np.allclose(v_ddim.step(v, t, -1, noisy), clean, atol=1e-4)


def test_timesteps_start_at_the_strength_and_descend():
    ddim = DDIM.from_config(SD_CONFIG)
    assert ddim.timesteps(0.04, 2) == [40, 20]
    assert ddim.timesteps(1.0, 4) == [999, 749, 500, 250]
    assert ddim.timesteps(0.001, 3) == [1, 0]  # starts at step 1 at least; repeated steps merge
    for bad in ({"strength": 0.0, "steps": 2}, {"strength": 1.5, "steps": 2}, {"strength": 0.5, "steps": 0}):
        with pytest.raises(OptionError):
            ddim.timesteps(**bad)
    with pytest.raises(OptionError, match="beta_schedule"):
        DDIM.from_config({"beta_schedule": "squaredcos_cap_v2"})


@pytest.mark.skipif(not EXPORT_STACK, reason="diffusers (export extra) not installed")
def test_schedule_and_step_match_diffusers():
    import torch
    from diffusers import DDIMScheduler

    reference = DDIMScheduler(**{k: v for k, v in SD_CONFIG.items()}, clip_sample=False, set_alpha_to_one=False, steps_offset=0)
    ours = DDIM.from_config(SD_CONFIG)
    assert np.allclose(ours.alphas_cumprod, reference.alphas_cumprod.double().numpy(), rtol=1e-6)
    rng = np.random.default_rng(1)
    sample, output = rng.normal(size=(1, 4, 5, 5)).astype(np.float32), rng.normal(size=(1, 4, 5, 5)).astype(np.float32)
    reference.set_timesteps(25)  # spacing 40: step t=80 -> 40
    expected = reference.step(torch.from_numpy(output), 80, torch.from_numpy(sample), eta=0.0).prev_sample.numpy()
    assert np.allclose(ours.step(output, 80, 40, sample), expected, atol=1e-5)
    noisy = reference.add_noise(torch.from_numpy(sample), torch.from_numpy(output), torch.tensor([40])).numpy()
    assert np.allclose(ours.add_noise(sample, 40, output), noisy, atol=1e-5)
