r"""An emulator with additive Gaussian model noise (jitter), for every filter including
FA-APF."""

from __future__ import annotations

__all__ = ["Jittered", "SpreadJittered"]

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

    def _zero(self) -> bool:
        """Whether the model noise is zero (the wrapped emulator's transition)."""
        return self.std == 0.0

    def _forecast(self, x_prev: Tensor, generator: torch.Generator | None) -> Tensor:
        """The transition's draw before the noise: the wrapped emulator's."""
        return self.emulator.sample(x_prev, generator=generator)

    def _guided(self, x_prev: Tensor, obs: Observation, generator) -> Tensor:
        """The first stage of the proposal: the draw before the noise, guided by ``obs``
        seen through the noise (:meth:`widen`)."""
        return self.emulator.sample_posterior(x_prev, self.widen(obs), generator=generator)

    def sample(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        x = self._forecast(x_prev, generator)
        if self._zero():
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
        if self._zero() or obs.y.shape[0] == 0:
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
        if self._zero():
            return self.emulator.sample_posterior(x_prev, obs, generator=generator)
        z = self._guided(x_prev, obs, generator)
        n = z.shape[0]
        x_tilde = self._add_jitter(z, generator)
        eta = obs.sample_noise((n,), generator=generator, dtype=torch.float64)
        H = self._matrix(obs).to(z.device)
        y_tilde = x_tilde.reshape(n, -1).to(torch.float64) @ H.T + eta.to(z.device)
        S = self._widened_matrix(obs, H)
        innovation = obs.y.to(device=z.device, dtype=torch.float64) - y_tilde  # (n, M)
        gain = self._gain(torch.linalg.solve(S, innovation.T).T, H)  # (n, D)
        return x_tilde + gain.reshape(z.shape).to(z.dtype)

    def _gain(self, solved: Tensor, H: Tensor) -> Tensor:
        r""":math:`Q H^\top S^{-1} (y - \tilde y)` per row, from ``solved`` = :math:`S^{-1}(y -
        \tilde y)` ``(n, M)``: :math:`q^2 H^\top` here."""
        return self.std**2 * solved @ H


class SpreadJittered(Jittered):
    r"""Model noise scaled to the ensemble: :math:`x^{k+1} = z + \xi`, :math:`z \sim
    p_\Phi(\cdot \mid x^k)`, :math:`\xi \sim \mathcal{N}(0, Q_k)` with

    .. math:: Q_k = h^2\, \rho \circ P_k, \qquad
        P_k = \widehat{\mathrm{Cov}}_i\big(\mathbb{E}_\Phi[x^{k+1} \mid x_i^k]\big),

    the sample covariance of the particles' predictive means, tapered elementwise by the
    Gaspari–Cohn correlation :math:`\rho_{jl} = \rho(d(j, l)/c)` of radius ``radius`` (grid
    cells; none: no taper) and scaled by ``scale`` :math:`h`.

    Isotropic noise (:class:`Jittered`) gives every component the same std and no
    correlation, so a component that is not observed is jittered but never corrected by
    the observation of its neighbours. :math:`Q_k` has the ensemble's own scales and
    correlations: the Gaussian conditional of the proposal then moves the unobserved
    components with the observed ones, and the noise shrinks as the ensemble does. The
    forecast distribution is the Gaussian mixture :math:`\frac1N \sum_i \mathcal{N}(\cdot\,;
    z_i, Q_k)`, the kernel density forecast of the regularised particle filter (Musso,
    Oudjane & Le Gland 2001) and of the adaptive Gaussian mixture filter (Stordal, Karlsen,
    Nævdal, Skaug & Vallès 2011, *Computational Geosciences* 15, 293–305), with the
    bandwidth :math:`h` tuned. FA-APF weights and proposes with it exactly as with
    :class:`Jittered` (docs/method.md#model-noise), given :math:`Q_k`.

    With ``shrink=True`` the kernel centres are shrunk towards the mean of the predictive
    means :math:`\bar\mu`, :math:`x^{k+1} = a z + (1 - a)\bar\mu + \xi` with :math:`a =
    \sqrt{1 - h^2}` (Liu & West 2001), so the mixture keeps the ensemble's covariance
    (:math:`a^2 P_k + h^2 P_k = P_k`) whatever :math:`h < 1`: :math:`h` then moves the
    filter from a particle filter (:math:`h \to 0`) towards a stochastic ensemble Kalman
    update with the tapered covariance (:math:`h \to 1`), the interpolation of the
    adaptive Gaussian mixture filter. The weights use the centres' means, the proposal
    guides :math:`z` with the observation :math:`(y - H(1 - a)\bar\mu)/a` of noise
    :math:`(\Sigma_y + H Q_k H^\top)/a^2`.

    With ``adaptive=True`` the bandwidth of each step is raised when the observation says
    the ensemble is too narrow (adaptive inflation from the innovation statistics,
    Desroziers, Berre, Chapnik & Poli 2005; Li, Kalnay & Miyoshi 2009): with the innovation
    :math:`d = y - H\bar\mu` of the mean of the predictive means, whose expectation is
    :math:`\mathbb{E}\,d^\top d = (1 + h_k^2)\operatorname{tr}(H P_k H^\top) +
    \operatorname{tr}\Sigma_y` when the forecast ensemble is drawn from the same
    distribution as the truth,

    .. math:: h_k^2 = \max\!\Big(h^2,\ \frac{d^\top d - \operatorname{tr}\Sigma_y}
        {\operatorname{tr}(H P_k H^\top)} - 1 - 2\,\frac{\sqrt{2\operatorname{tr}S^2}}
        {\operatorname{tr}(H P_k H^\top)}\Big), \qquad
        S = (1 + h^2) H P_k H^\top + \Sigma_y,

    so :math:`h` is the floor and the noise grows with the excess of the innovation over
    what the ensemble's spread and the observation noise explain, once that excess is
    larger than twice its own standard deviation under consistency
    (:attr:`SIGNIFICANCE`; :math:`\operatorname{Var} d^\top d = 2\operatorname{tr}S^2`
    for :math:`d \sim \mathcal N(0, S)`). Without that discount one step's estimate is
    mostly observation noise when :math:`\Sigma_y` dominates :math:`H P_k H^\top`. An
    ensemble that has collapsed away from the truth (its spread small, its error large)
    then gets the model noise that lets the proposal's Gaussian conditional pull it back; a
    consistent ensemble keeps :math:`h`. Needs a linear observation operator; not with
    ``shrink``. On Lorenz-96 it was neutral on 12 training twins (docs/results/l96.md).

    :math:`Q_k` is set by :meth:`adapt` from the particles about to be weighted (and, with
    ``adaptive``, the observation); FA-APF calls it at the start of every step, so the
    weights and the proposal of one step see the same :math:`Q_k`. A filter that does not
    call it cannot use this wrapper.

    References:
        | Improving Regularized Particle Filters (Musso, Oudjane & Le Gland, 2001), in
        | Sequential Monte Carlo Methods in Practice, Springer, 247-271

        | Combined Parameter and State Estimation in Simulation-Based Filtering (Liu &
        | West, 2001), in Sequential Monte Carlo Methods in Practice, Springer, 197-223

        | Diagnosis of observation, background and analysis-error statistics in
        | observation space (Desroziers, Berre, Chapnik & Poli, 2005), Quarterly Journal
        | of the Royal Meteorological Society 131, 3385-3396

        | Simultaneous estimation of covariance inflation and observation errors within an
        | ensemble Kalman filter (Li, Kalnay & Miyoshi, 2009), Quarterly Journal of the
        | Royal Meteorological Society 135, 523-533
    """

    def __init__(
        self,
        emulator: Any,
        scale: float,
        radius: float = math.inf,
        periodic: bool | tuple[float, ...] = True,
        shrink: bool = False,
        adaptive: bool = False,
    ) -> None:
        super().__init__(emulator, 0.0)
        scale, radius = float(scale), float(radius)
        if not (math.isfinite(scale) and scale > 0):
            raise ValueError(f"jitter_scale must be finite and > 0, got {scale}")
        if not radius > 0:
            raise ValueError(f"jitter_radius must be > 0, got {radius}")
        if shrink and not scale < 1:
            raise ValueError(f"jitter_scale must be < 1 with shrinkage, got {scale}")
        if shrink and adaptive:
            raise ValueError("jitter_adaptive cannot be combined with jitter_shrink")
        self.scale, self.radius, self.periodic = scale, radius, periodic
        self.shrink, self.adaptive = bool(shrink), bool(adaptive)
        self.last_scale = scale  # h_k of the last adapt()
        # the kernel centres a z + shift (Liu & West 2001): a = sqrt(1 - h^2) with shrinkage
        self.a = math.sqrt(1.0 - scale**2) if self.shrink else 1.0
        self._shift: Tensor | None = None  # (1 - a) * mean of the predictive means, (*S)
        self._taper: Tensor | None = None
        self._cov: Tensor | None = None  # Q_k (D, D) float64, CPU
        self._factor: Tensor | None = None  # B with B B^T = Q_k, (D, D)
        self._means: tuple[Tensor, Tensor] | None = None  # (particles, predictive means)

    def __repr__(self) -> str:
        return (
            f"SpreadJittered({self.emulator!r}, scale={self.scale}, radius={self.radius}, "
            f"shrink={self.shrink}, adaptive={self.adaptive})"
        )

    def _zero(self) -> bool:
        if self._cov is None:
            raise RuntimeError(
                "SpreadJittered: call adapt(particles) before drawing (FA-APF does at every "
                "step; use Jittered with other filters)"
            )
        return False

    def _tapering(self, D: int) -> Tensor:
        if self._taper is None or self._taper.shape[0] != D:
            from ..filters.letkf import (
                _resolve_periods,
                _state_grid,
                gaspari_cohn,
                grid_distances,
            )

            shape = self.state_shape or (D,)
            grid = _state_grid(shape)
            dist = grid_distances(grid, grid, _resolve_periods(self.periodic, shape))
            self._taper = gaspari_cohn(dist / self.radius).to(torch.float64)
        return self._taper

    def adapt(
        self,
        particles: Tensor,
        *,
        generator: torch.Generator | None = None,
        obs: Observation | None = None,
    ) -> Tensor:
        r"""Sets :math:`Q_k` from ``particles`` ``(N, *S)`` (and, with ``adaptive``, the
        innovation of ``obs``; the class docstring) and returns their predictive means, which
        :meth:`predict_mean` then returns for the same tensor without another network pass.
        The bandwidth used is kept in :attr:`last_scale`."""
        N = particles.shape[0]
        if N < 2:
            raise ValueError(f"SpreadJittered needs at least 2 particles, got {N}")
        mu = self.emulator.predict_mean(particles, generator=generator)
        flat = mu.reshape(N, -1).to(device="cpu", dtype=torch.float64)
        mean = flat.mean(0)
        A = flat - mean
        P = A.T @ A / (N - 1)
        h = self.scale
        if self.adaptive and obs is not None:
            h = self._adaptive_scale(mean, P, obs)
        self.last_scale = h
        if math.isfinite(self.radius):
            P = P * self._tapering(P.shape[0])
        Q = h**2 * P
        evals, evecs = torch.linalg.eigh(Q)  # a taper on a torus may leave small negatives
        self._factor = evecs * evals.clamp_min(0.0).sqrt()
        self._cov = self._factor @ self._factor.T
        if self.shrink:
            shift = (1.0 - self.a) * mean.reshape(mu.shape[1:])
            self._shift = shift.to(device=mu.device, dtype=mu.dtype)
            mu = self._centres(mu)
        self._means = (particles, mu)
        return mu

    SIGNIFICANCE = 2.0
    """How many of its standard deviations the innovation excess must exceed before the
    bandwidth is raised above ``scale`` (and by how much it is discounted)."""

    def _adaptive_scale(self, mean: Tensor, P: Tensor, obs: Observation) -> float:
        r""":math:`h_k` from the innovation of the mean of the predictive means ``mean``
        ``(D,)`` and their (untapered) covariance ``P`` ``(D, D)`` (class docstring)."""
        obs = obs.observed()
        M = obs.y.shape[0]
        if M == 0:
            return self.scale
        H = self._matrix(obs).to(device="cpu", dtype=torch.float64)
        d = obs.y.to(device="cpu", dtype=torch.float64) - H @ mean
        R = noise_matrix(obs.noise, M).to(device="cpu", dtype=torch.float64)
        HPH = H @ P @ H.T
        spread = float(HPH.trace())
        if not spread > 0:
            return self.scale
        excess = (float(d @ d) - float(R.diagonal().sum())) / spread - 1.0
        # its standard deviation when the ensemble is consistent with bandwidth h:
        # Var(d^T d) = 2 tr(S^2) for d ~ N(0, S), S = (1 + h^2) H P H^T + Sigma_y
        S = (1.0 + self.scale**2) * HPH + R
        sd = math.sqrt(2.0 * float((S * S.T).sum())) / spread
        return math.sqrt(max(self.scale**2, excess - self.SIGNIFICANCE * sd))

    def _centres(self, z: Tensor) -> Tensor:
        r"""The kernel centres :math:`a z + (1 - a)\bar\mu` (``z`` itself without shrinkage)."""
        if not self.shrink:
            return z
        return self.a * z + self._shift.to(z.device)

    def predict_mean(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        if self._means is not None and self._means[0] is x_prev:
            return self._means[1]
        return self._centres(self.emulator.predict_mean(x_prev, generator=generator))

    def predict_obs_moments(self, x_prev: Tensor, obs: Observation, *, generator=None):
        mu, hmu, hvh = self.emulator.predict_obs_moments(x_prev, obs, generator=generator)
        if not self.shrink:
            return mu, hmu, hvh
        shift = obs.predict(self._shift[None].to(mu.device))[0]  # H of the shift (linear H)
        return self._centres(mu), self.a * hmu + shift.to(hmu), self.a**2 * hvh

    def _forecast(self, x_prev: Tensor, generator: torch.Generator | None) -> Tensor:
        self._zero()
        return self._centres(self.emulator.sample(x_prev, generator=generator))

    def _guided(self, x_prev: Tensor, obs: Observation, generator) -> Tensor:
        r"""With shrinkage the observation of the centre :math:`a z + s` is one of :math:`z`:
        :math:`(y - Hs)/a` with noise :math:`(\Sigma_y + H Q_k H^\top)/a^2`."""
        wide = self.widen(obs)
        if not self.shrink:
            return self.emulator.sample_posterior(x_prev, wide, generator=generator)
        H = self._matrix(obs)
        shift = self._shift.reshape(-1).to(torch.float64) @ H.T.to(torch.float64).cpu()
        y = (obs.y.to(torch.float64).cpu() - shift) / self.a
        W = self._widened_matrix(obs, H.cpu()) / self.a**2
        of_z = Observation(y.to(obs.y), obs.operator, full_noise(W))
        return self._centres(self.emulator.sample_posterior(x_prev, of_z, generator=generator))

    def _add_jitter(self, x: Tensor, generator: torch.Generator | None) -> Tensor:
        n = x.shape[0]
        xi = torch.randn((n, self._factor.shape[1]), generator=generator, dtype=torch.float64)
        noise = (xi @ self._factor.T).reshape(x.shape)
        return x + noise.to(device=x.device, dtype=x.dtype)

    def _widened_matrix(self, obs: Observation, H: Tensor) -> Tensor:
        R = noise_matrix(obs.noise, obs.y.shape[0]).to(torch.float64).to(H.device)
        HQ = H.to(torch.float64) @ self._cov.to(H.device)
        W = HQ @ H.to(torch.float64).T + R
        return (W + W.T) / 2

    def widen(self, obs: Observation) -> Observation:
        r"""The observation of :math:`z`: noise :math:`\Sigma_y + H Q_k H^\top` (full)."""
        obs = obs.observed()
        if self._zero() or obs.y.shape[0] == 0:
            return obs
        return Observation(
            obs.y, obs.operator, full_noise(self._widened_matrix(obs, self._matrix(obs)))
        )

    def _gain(self, solved: Tensor, H: Tensor) -> Tensor:
        return solved @ (H.to(torch.float64) @ self._cov.to(H.device))
