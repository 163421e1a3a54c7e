"""The denoiser around a raw network (Karras et al. 2022, "Elucidating the design space of
diffusion-based generative models", table 1):

    D(x, sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))

Each kind maps sigma (B,) to the four coefficients, each (B,), in float32 (float64 for float64
sigmas), as EDM computes them whatever the network's dtype. `nn/unet._Net` applies them around its
forward, so a preconditioned model keeps the raw network's weights and names."""


import math
from typing import Final

import torch
from torch import nn


class EdmPreconditioning(nn.Module):
    """EDM's (and EDM2's): unit-variance input and target for data of standard deviation sigma_data."""

    sigma_data: Final[float]

    def __init__(self, *, sigma_data: float):
        super().__init__()
        self.sigma_data = sigma_data

    def forward(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        sd = self.sigma_data
        total = sigma * sigma + sd * sd  # sigma^2 + sd^2
        return sd * sd / total, sigma * sd / total.sqrt(), 1.0 / total.sqrt(), sigma.log() / 4.0


class VpPreconditioning(nn.Module):
    """The variance-preserving schedule's (DDPM++): F predicts the noise, scaled by -sigma; c_noise is
    the schedule's time of sigma, (M - 1) t(sigma), t(sigma) = (sqrt(b_min^2 + 2 b_d ln(1 + sigma^2)) - b_min) / b_d."""

    beta_d: Final[float]
    beta_min: Final[float]
    steps: Final[float]

    def __init__(self, *, beta_d: float, beta_min: float, timesteps: int):
        super().__init__()
        self.beta_d, self.beta_min, self.steps = beta_d, beta_min, float(timesteps - 1)

    def forward(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        one = torch.ones_like(sigma)
        t = ((self.beta_min**2 + 2.0 * self.beta_d * torch.log1p(sigma * sigma)).sqrt() - self.beta_min) / self.beta_d
        return one, -sigma, 1.0 / (sigma * sigma + 1.0).sqrt(), self.steps * t


class VePreconditioning(nn.Module):
    """The variance-exploding schedule's (NCSN++): F predicts the noise, scaled by sigma; c_noise = ln(sigma / 2)."""

    log_half: Final[float]

    def __init__(self) -> None:
        super().__init__()
        self.log_half = math.log(0.5)

    def forward(self, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        return torch.ones_like(sigma), sigma, torch.ones_like(sigma), sigma.log() + self.log_half
