r"""Lorenz-96 (Lorenz 1996; the benchmark of the EnSF, EnFF and LETKF papers;
docs/method.md#test-systems).

.. math:: \frac{\mathrm{d}x_i}{\mathrm{d}t} = (x_{i+1} - x_{i-2})\, x_{i-1} - x_i + F,
          \qquad i = 1, \dots, D \ \text{(cyclic)},

:math:`D = 40`, :math:`F = 8` by default.  Integrated with classical RK4 at
:math:`\Delta t = 0.01` (the usual choice: the fastest linear time scale is ~1/|F| and RK4
is accurate to ~1e-9 per unit time at this step), snapshots every 0.05 time units (the
"6 hours" of Lorenz 1996).

Optional additive model noise (``noise_std`` :math:`= q \ge 0`, default 0 — deterministic):
the SDE :math:`\mathrm{d}x = f(x)\,\mathrm{d}t + q\,\mathrm{d}W_t` (:math:`W` a
:math:`D`-dimensional Brownian motion) is integrated by splitting every internal step into
a deterministic RK4 step followed by the Euler–Maruyama increment

.. math:: x \leftarrow \mathrm{RK4}_{\Delta t}(x) + q \sqrt{\Delta t}\, \xi, \qquad \xi \sim \mathcal{N}(0, I_D),

(strong order 1 for additive noise), so over one snapshot interval of :math:`S` steps the
added noise has covariance :math:`\approx q^2\, S\Delta t\, I` = :math:`q^2` × interval.

References:
    | Predictability: A Problem Partly Solved (Lorenz, 1996)
    | Proc. ECMWF Seminar on Predictability, vol. 1, 1-18
"""

from __future__ import annotations

__all__ = ["Lorenz96", "lorenz96_drift"]

import math

import torch
from torch import Tensor

from .base import StochasticSystem, whole_steps


def lorenz96_drift(x: Tensor, forcing: float = 8.0) -> Tensor:
    r"""Lorenz-96 vector field :math:`(x_{i+1} - x_{i-2}) x_{i-1} - x_i + F`; ``(N, D) -> (N, D)``."""
    return (torch.roll(x, -1, -1) - torch.roll(x, 2, -1)) * torch.roll(x, 1, -1) - x + forcing


class Lorenz96(StochasticSystem):
    r"""Lorenz-96 with optional additive model noise; states ``(N, D)``.

    Arguments:
        dim: number of variables :math:`D` (40; at least 4).
        forcing: :math:`F` (8: chaotic, leading Lyapunov exponent ≈ 1.7).
        dt: internal RK4 step (0.01).
        interval: time between snapshots (0.05); a whole number of ``dt``.
        noise_std: :math:`q` of the additive noise :math:`q\,\mathrm{d}W` (0: deterministic;
            see the module docstring for the scheme).
    """

    def __init__(
        self,
        dim: int = 40,
        forcing: float = 8.0,
        dt: float = 0.01,
        interval: float = 0.05,
        noise_std: float = 0.0,
    ):
        if int(dim) != dim or dim < 4:
            raise ValueError(f"dim must be an integer >= 4, got {dim}")
        if dt <= 0 or interval <= 0:
            raise ValueError(f"dt and interval must be > 0, got dt={dt}, interval={interval}")
        if noise_std < 0:
            raise ValueError(f"noise_std must be >= 0, got {noise_std}")
        self.dim, self.forcing = int(dim), float(forcing)
        self.dt, self.interval, self.noise_std = float(dt), float(interval), float(noise_std)
        self.steps_per_interval = whole_steps(interval, dt)
        self.state_shape = (self.dim,)

    def __repr__(self) -> str:
        return (
            f"Lorenz96(dim={self.dim}, forcing={self.forcing}, dt={self.dt}, "
            f"interval={self.interval}, noise_std={self.noise_std})"
        )

    def drift(self, x: Tensor) -> Tensor:
        r"""The vector field :math:`f(x)`; ``(N, D) -> (N, D)``."""
        return lorenz96_drift(x, self.forcing)

    def rk4_step(self, x: Tensor, dt: float | None = None) -> Tensor:
        """One classical Runge–Kutta 4 step of the deterministic dynamics; ``(N, D)``."""
        h = self.dt if dt is None else dt
        k1 = self.drift(x)
        k2 = self.drift(x + 0.5 * h * k1)
        k3 = self.drift(x + 0.5 * h * k2)
        k4 = self.drift(x + h * k3)
        return x + (h / 6.0) * (k1 + 2.0 * k2 + 2.0 * k3 + k4)

    def draw_noise(self, n, *, generator=None, dtype=torch.float32, device=None) -> Tensor | None:
        r"""Standard normals :math:`\xi` ``(n, S, D)`` of one interval, or ``None`` when
        ``noise_std == 0`` (the generator is then left untouched)."""
        if self.noise_std == 0.0:
            return None
        return torch.randn(
            (n, self.steps_per_interval, self.dim), generator=generator, dtype=dtype, device=device
        )

    def advance(self, x: Tensor, noise: Tensor | None) -> Tensor:
        scale = self.noise_std * math.sqrt(self.dt)
        for s in range(self.steps_per_interval):
            x = self.rk4_step(x)
            if noise is not None:
                x = x + scale * noise[:, s]
        return x

    def attractor_states(
        self,
        n: int,
        generator: torch.Generator | None = None,
        *,
        burn_in: float = 20.0,
        dtype: torch.dtype = torch.float32,
        chunk_size: int | None = None,
    ) -> Tensor:
        r"""``n`` independent states on the attractor, ``(n, D)``: :math:`F + \mathcal{N}(0, I)`
        run for ``burn_in`` time units (20 ≈ 34 Lyapunov times; rounded up to whole intervals)."""
        x0 = self.forcing + torch.randn((n, self.dim), generator=generator, dtype=dtype)
        return self.step(
            x0, math.ceil(burn_in / self.interval - 1e-9), generator, chunk_size=chunk_size
        )
