import math

import numpy as np
import pytest
import torch

from faseg_rt.config import FASegConfig
from faseg_rt.method.inversion import fixed_noise, invert, sample_latents


def test_inversion_coefficients_match_diffusers_ddim():
    """Our explicit schedule gives the alphas diffusers' DDIM (spec settings) uses for t = 1."""
    from diffusers import DDIMScheduler

    s = DDIMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                      beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=False,
                      steps_offset=1)
    s.set_timesteps(1)
    assert int(s.timesteps[0]) == FASegConfig().timestep == 1
    a_prev, a = FASegConfig().inversion_coefficients()
    assert a_prev == pytest.approx(float(s.final_alpha_cumprod), abs=1e-7)
    assert a == pytest.approx(float(s.alphas_cumprod[1]), abs=1e-7)


def test_invert_is_the_ddim_step():
    cfg = FASegConfig()
    z0, eps = torch.randn(2, 4, 8, 8, dtype=torch.float64), torch.randn(2, 4, 8, 8, dtype=torch.float64)
    a_prev, a = cfg.inversion_coefficients()
    x0 = (z0 - math.sqrt(1 - a_prev) * eps) / math.sqrt(a_prev)
    expect = math.sqrt(a) * x0 + math.sqrt(1 - a) * eps
    torch.testing.assert_close(invert(z0, eps, cfg), expect, rtol=0, atol=1e-12)


def test_fixed_noise_is_seed0_cpu_randn_and_shared_by_every_pair():
    cfg = FASegConfig()
    n = fixed_noise(cfg)
    g = torch.Generator("cpu").manual_seed(0)
    assert torch.equal(n, torch.randn((2, 4, 64, 64), generator=g))
    moments = torch.zeros(6, 8, 64, 64)  # 3 images x (image, mirror); mean 0, logvar 0 -> std 1
    z = sample_latents(moments, n, 0.5)
    for i in range(3):
        assert torch.equal(z[2 * i: 2 * i + 2], n * 0.5)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="threshold"):
        FASegConfig(threshold=1.5)
    with pytest.raises(ValueError, match="one weight per resolution"):
        FASegConfig(cross_weights={8: 1.0})
    assert np.isclose(sum(FASegConfig().cross_weights.values()), 1.0)
