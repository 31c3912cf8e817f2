r"""An emulator with additive Gaussian model noise (jitter), for every filter including
FA-APF."""

from __future__ import annotations

__all__ = ["Jittered"]

import math
from typing import Any

import torch
from azula.linalg.covariance import DiagonalCovariance, IsotropicCovariance
from torch import Tensor

from ..observations import Observation, full_noise, linear_matrix, noise_matrix


class Jittered:
    r"""An emulator with additive Gaussian model noise: :math:`x^{k+1} = z + q\,\xi`,
    :math:`z \sim p_\Phi(\cdot \mid x^k)` the wrapped emulator's draw, :math:`\xi \sim
    \mathcal{N}(0, I)` (state units).

    A particle filter with a deterministic model cannot separate the duplicates that
    resampling creates; the usual remedy is jitter (DAPPER's ``reg``; the ``model_noise_std``
    of the EnFF authors' code).  Wrapping the forecast model gives exactly the latter, as a
    model-error assumption of the filter.  ``q`` must be tuned.

    FA-APF works with the jittered transition exactly, given the wrapped emulator's own
    approximations (docs/method.md#model-noise), for a linear observation operator
    :math:`H` and noise :math:`\Sigma_y`:

    - its weights use the wrapped emulator's predictive moments with the observation seen
      through the jitter, :math:`y \mid z \sim \mathcal{N}(Hz, \Sigma_y + q^2 H H^\top)`
      (:meth:`widen`);
    - its proposal :math:`p(x^{k+1} \mid x^k, y)` is drawn in two exact stages: :math:`z`
      from the wrapped emulator's optimal proposal under the widened observation, then
      :math:`x^{k+1} \mid z, y`, a Gaussian conditional, by Matheron's rule
      (:math:`\tilde x = z + q\xi`, :math:`\tilde y = H\tilde x + \eta`,
      :math:`x^{k+1} = \tilde x + q^2 H^\top (q^2 H H^\top + \Sigma_y)^{-1} (y - \tilde y)`;
      Journel & Huijbregts 1978, *Mining Geostatistics*, Academic Press).
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

    def _add_jitter(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """``x + q ξ``, ``ξ`` drawn from ``generator`` (on the CPU, like every filter draw)."""
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return x + self.std * noise.to(x.device)

    def sample(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        x = self.emulator.sample(x_prev, generator=generator)
        if self.std == 0.0:
            return x
        return self._add_jitter(x, generator)

    def predict_mean(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """:math:`\\mathbb{E}[x^{k+1} \\mid x^k]`, the wrapped emulator's (the jitter has mean
        zero)."""
        return self.emulator.predict_mean(x_prev, generator=generator)

    def predict_obs_moments(self, x_prev: Tensor, obs: Observation, *, generator=None):
        """The wrapped emulator's predictive moments of :math:`z`; the jitter's part of the
        observed variance is in :meth:`widen`'s noise."""
        return self.emulator.predict_obs_moments(x_prev, obs, generator=generator)

    def _matrix(self, obs: Observation) -> Tensor:
        H = linear_matrix(obs.operator, self.state_shape)
        if H is None:
            raise ValueError(
                f"Jittered: FA-APF with model noise needs a linear observation operator, got "
                f"{obs.operator!r}"
            )
        return H

    def _widened_matrix(self, obs: Observation, H: Tensor) -> Tensor:
        r""":math:`\Sigma_y + q^2 H H^\top` ``(M, M)`` in float64, on ``H``'s device."""
        R = noise_matrix(obs.noise, obs.y.shape[0]).to(torch.float64).to(H.device)
        return self.std**2 * (H @ H.T) + R

    def widen(self, obs: Observation) -> Observation:
        r"""The observation of :math:`z`: noise :math:`\Sigma_y + q^2 H H^\top` (missing
        entries dropped; diagonal when :math:`H H^\top = I` and :math:`\Sigma_y` is)."""
        obs = obs.observed()
        if self.std == 0.0 or obs.y.shape[0] == 0:
            return obs
        H = self._matrix(obs)
        M, q2 = obs.y.shape[0], self.std**2
        if torch.equal(H @ H.T, torch.eye(M, dtype=H.dtype)):
            if isinstance(obs.noise, IsotropicCovariance):
                lmbda = torch.as_tensor(obs.noise.lmbda, dtype=torch.float64)
                return Observation(obs.y, obs.operator, IsotropicCovariance(lmbda + q2))
            if isinstance(obs.noise, DiagonalCovariance):
                D = obs.noise.D.flatten().to(torch.float64)
                return Observation(obs.y, obs.operator, DiagonalCovariance(D + q2))
        return Observation(obs.y, obs.operator, full_noise(self._widened_matrix(obs, H)))

    def sample_posterior(
        self, x_prev: Tensor, obs: Observation, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Draws from the optimal proposal of the jittered transition (class docstring)."""
        obs = obs.observed()
        if obs.y.shape[0] == 0:
            return self.sample(x_prev, generator=generator)
        if self.std == 0.0:
            return self.emulator.sample_posterior(x_prev, obs, generator=generator)
        z = self.emulator.sample_posterior(x_prev, self.widen(obs), generator=generator)
        n = z.shape[0]
        x_tilde = self._add_jitter(z, generator)
        eta = obs.sample_noise((n,), generator=generator, dtype=torch.float64)
        H = self._matrix(obs).to(z.device)
        y_tilde = x_tilde.reshape(n, -1).to(torch.float64) @ H.T + eta.to(z.device)
        S = self._widened_matrix(obs, H)
        innovation = obs.y.to(device=z.device, dtype=torch.float64) - y_tilde  # (n, M)
        gain = self.std**2 * torch.linalg.solve(S, innovation.T).T @ H  # (n, D)
        return x_tilde + gain.reshape(z.shape).to(z.dtype)
