r"""An emulator with additive Gaussian model noise (jitter)."""

from __future__ import annotations

__all__ = ["Jittered"]

import math
from typing import Any

import torch
from torch import Tensor


class Jittered:
    r"""An emulator with additive Gaussian model noise: :math:`x^{k+1} = \Phi(x^k) + q\,\xi`,
    :math:`\xi \sim \mathcal{N}(0, I)` (in state units).

    A bootstrap particle filter with a deterministic model cannot separate the duplicates
    that resampling creates; the usual remedy is jitter (DAPPER's ``reg``; the
    ``model_noise_std`` of the EnFF authors' code).  Wrapping the forecast model gives
    exactly the latter.  ``q`` must be tuned.
    """

    def __init__(self, emulator: Any, std: float) -> None:
        std = float(std)
        if not (math.isfinite(std) and std >= 0):
            raise ValueError(f"jitter std must be finite and >= 0, got {std}")
        self.emulator = emulator
        self.std = std
        self.state_shape = tuple(getattr(emulator, "state_shape", ()))

    def __repr__(self) -> str:
        return f"Jittered({self.emulator!r}, std={self.std})"

    def sample(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        x = self.emulator.sample(x_prev, generator=generator)
        if self.std == 0.0:
            return x
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return x + self.std * noise.to(x.device)
