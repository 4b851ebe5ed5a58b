"""The one DDIM inversion step (spec step 3) and the fixed-noise latent sample (spec step 2)."""

from __future__ import annotations

import math

import torch

from faseg_rt.config import FASegConfig


def fixed_noise(config: FASegConfig, channels: int = 4) -> torch.Tensor:
    """randn((2, C, 64, 64)) from a CPU generator seeded with config.seed (float32, CPU).

    The same tensor serves every image (row 0 for the image, row 1 for its mirror), whatever the
    batch, so results never depend on which images share a batch.
    """
    g = torch.Generator("cpu").manual_seed(config.seed)
    s = config.latent_size
    return torch.randn((2, channels, s, s), generator=g, dtype=torch.float32)


def sample_latents(moments: torch.Tensor, noise: torch.Tensor, scaling_factor: float) -> torch.Tensor:
    """Draw z0 from the VAE's diagonal Gaussian with a fixed noise tensor.

    moments: (2B, 2C, h, w) VAE encoder output (mean, logvar) for B [image, mirror] pairs.
    noise:   (2, C, h, w), repeated over the B pairs.
    Returns  (2B, C, h, w) = (mean + exp(logvar / 2) * noise) * scaling_factor.
    """
    mean, logvar = moments.chunk(2, dim=1)
    logvar = logvar.clamp(-30.0, 20.0)  # the clamp diffusers' DiagonalGaussianDistribution applies
    n = noise.to(device=mean.device, dtype=mean.dtype).repeat(mean.shape[0] // 2, 1, 1, 1)
    return (mean + torch.exp(0.5 * logvar) * n) * scaling_factor


def invert(z0: torch.Tensor, eps: torch.Tensor, config: FASegConfig) -> torch.Tensor:
    """z1 = sqrt(a) * x0 + sqrt(1 - a) * eps with x0 = (z0 - sqrt(1 - a_prev) * eps) / sqrt(a_prev).

    z0, eps: (N, 4, 64, 64).  One deterministic DDIM step from alpha-bar_0 to alpha-bar_1.
    """
    a_prev, a = config.inversion_coefficients()
    x0 = (z0 - math.sqrt(1.0 - a_prev) * eps) / math.sqrt(a_prev)
    return math.sqrt(a) * x0 + math.sqrt(1.0 - a) * eps
