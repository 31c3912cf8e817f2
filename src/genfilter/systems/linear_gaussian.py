r"""A random stable linear-Gaussian system, the model on which the Kalman filter is exact.

.. math:: x^{k+1} = A x^k + b + w^k, \qquad w^k \sim \mathcal{N}(0, Q),

with :math:`A = 0.95\,U` (:math:`U` a random orthogonal matrix, so the spectral radius is
0.95), :math:`b \sim 0.1\,\mathcal{N}(0, I)` and :math:`Q = L L^\top / D + 0.1 I`, all drawn
from ``seed``.  Every filter of genfilter can be checked on it against the exact answer
(:class:`~genfilter.filters.kalman.KalmanFilter`; Kalman 1960), with the exact emulator
:class:`~genfilter.emulators.linear_gaussian.LinearGaussianEmulator` as forecast model.
"""

from __future__ import annotations

__all__ = ["LinearGaussian"]

import math

import torch
from torch import Tensor

from .base import StochasticSystem


class LinearGaussian(StochasticSystem):
    """The system :math:`x^{k+1} = A x^k + b + w^k` (module docstring).

    Arguments:
        dim: State dimension :math:`D \\ge 2`.
        seed: Seed of :math:`A`, :math:`b`, :math:`Q`.
        interval: Model time between snapshots (a label: one snapshot is one step).
    """

    def __init__(self, dim: int = 8, seed: int = 0, interval: float = 1.0) -> None:
        if isinstance(dim, bool) or not isinstance(dim, int) or dim < 2:
            raise ValueError(f"dim must be an integer >= 2, got {dim!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        if not (isinstance(interval, (int, float)) and math.isfinite(interval) and interval > 0):
            raise ValueError(f"interval must be a positive number, got {interval!r}")
        g = torch.Generator().manual_seed(seed)
        D = dim
        self.A = 0.95 * torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))[0]
        self.b = 0.1 * torch.randn(D, generator=g, dtype=torch.float64)
        L = 0.4 * torch.randn(D, D, generator=g, dtype=torch.float64)
        self.Q = L @ L.T / D + 0.1 * torch.eye(D, dtype=torch.float64)
        self._chol = torch.linalg.cholesky(self.Q)
        self.dim, self.seed, self.interval = D, seed, float(interval)
        self.state_shape = (D,)

    def __repr__(self) -> str:
        return f"LinearGaussian(dim={self.dim}, seed={self.seed}, interval={self.interval})"

    def draw_noise(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device=None,
    ) -> Tensor:
        eps = torch.randn((n, self.dim), generator=generator, dtype=torch.float64, device=device)
        return (eps @ self._chol.to(eps.device).T).to(dtype)

    def advance(self, x: Tensor, noise: Tensor | None) -> Tensor:
        A, b = self.A.to(x), self.b.to(x)
        out = x @ A.T + b
        return out if noise is None else out + noise

    def attractor_states(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        burn_in: float = 10.0,
        dtype: torch.dtype = torch.float32,
        chunk_size: int | None = None,
    ) -> Tensor:
        """``n`` states after ``burn_in`` time units from 0 (near the stationary law)."""
        x = torch.zeros((n, self.dim), dtype=dtype)
        return self.step(
            x, max(1, math.ceil(burn_in / self.interval)), generator, chunk_size=chunk_size
        )
