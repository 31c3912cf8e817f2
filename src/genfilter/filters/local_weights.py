r"""Localised particle weights and local resampling (docs/method.md#localised-weights).

In high dimension the weights of a particle filter collapse: with :math:`M` independent
observations the log-likelihoods of :math:`N` particles spread by :math:`O(\sqrt{M})`, so
unless :math:`\log N \gtrsim M` one particle takes all the weight (Snyder, Bengtsson,
Bickel & Anderson 2008). FA-APF then holds its ESS only by tempering the log-weights with a
tiny inflation :math:`\beta`, and the weights carry almost none of the observation.

Localisation, as in the local particle filter of Penny & Miyoshi (2016), gives every grid
point :math:`j` its own weights from the observations near it:

.. math::

    \ell_{i,j} = -\tfrac12 \sum_m \rho\!\left(d(j, m)/c\right) r_{i,m}\,(\Sigma_y^{-1} r_i)_m,
    \qquad r_i = y - H(\mu_i),

with :math:`\rho` the Gaspari–Cohn function of radius :math:`c` (grid cells) and
:math:`d(j, m)` the distance from point :math:`j` to observation :math:`m`
(``operator.locations``; minimum image on periodic axes). For a diagonal
:math:`\Sigma_y` and :math:`\rho \equiv 1` the sum is the global log-likelihood up to a
constant. Every point then gets its own inflation :math:`\beta_j` (the ESS of
:math:`\exp(\beta_j \ell_{\cdot,j})` in the target interval; :func:`local_inflation`) and
its own systematic resampling, all with **one** uniform draw (:func:`local_ancestors`): the
ancestors of particle :math:`i` at neighbouring points are the same wherever their
weights are alike, and equal the global resampling's when every point has the same
weights. The resampled particle :math:`i` takes at point :math:`j` the value of its
ancestor there, :math:`\tilde x_{i,j} = x_{a_{i,j},j}`; FA-APF then moves it with its
guided proposal, which also smooths the seams between ancestors.

References:
    | Obstacles to High-Dimensional Particle Filtering (Snyder, Bengtsson, Bickel &
    | Anderson, 2008), Monthly Weather Review 136, 4629-4640

    | A local particle filter for high-dimensional geophysical systems (Penny & Miyoshi,
    | 2016), Nonlinear Processes in Geophysics 23, 391-405

    | Construction of correlation functions in two and three dimensions (Gaspari & Cohn,
    | 1999), Quarterly Journal of the Royal Meteorological Society 125, 723-757
"""

from __future__ import annotations

__all__ = [
    "column_ess",
    "localisation_weights",
    "local_log_likelihoods",
    "local_inflation",
    "local_ancestors",
]

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from ..observations import Observation
from .letkf import (
    _observation_locations,
    _resolve_periods,
    _state_grid,
    gaspari_cohn,
    grid_distances,
)
from .resampling import _ONE_MINUS


def localisation_weights(
    obs: Observation,
    state_shape: Sequence[int],
    radius: float,
    periodic: bool | Sequence[float] = True,
) -> Tensor:
    r""":math:`\rho(d(j, m)/c)` for every grid point :math:`j` and observed value :math:`m`,
    ``(prod(S), M)`` float64 on the CPU."""
    state_shape = tuple(int(s) for s in state_shape)
    locations = _observation_locations(obs, state_shape)
    periods = _resolve_periods(periodic, state_shape)
    dist = grid_distances(_state_grid(state_shape), locations, periods)
    if math.isinf(radius):
        return torch.ones_like(dist)
    return gaspari_cohn(dist / radius)


def local_log_likelihoods(predicted: Tensor, obs: Observation, rho: Tensor) -> Tensor:
    r""":math:`\ell_{i,j}` of the module docstring, ``(N, prod(S))`` float64 on the CPU,
    from the predicted states ``(N, *S)`` and the weights ``rho (prod(S), M)``."""
    r = (obs.y.to(predicted) - obs.predict(predicted)).double().cpu()  # (N, M)
    noise = obs.noise.to(dtype=torch.float64, device=r.device)
    q = r * noise.inv(r)  # r_m (Σ⁻¹ r)_m
    return -0.5 * (q @ rho.T)


def column_ess(log_w: Tensor) -> Tensor:
    """ESS of every column of unnormalised log-weights ``(N, P)``."""
    w = torch.exp(log_w - log_w.max(0, keepdim=True).values)
    return w.sum(0) ** 2 / (w * w).sum(0)


def local_inflation(
    ll: Tensor,
    n_min: float,
    n_max: float,
    *,
    prior: Tensor | None = None,
    beta_min: float = 1e-12,
    iterations: int = 60,
) -> tuple[Tensor, Tensor, Tensor]:
    r"""Per-column inflation :math:`\beta_j`: 1 where the ESS of
    :math:`\log\pi + \ell_{\cdot,j}` is at least ``n_min``, else a bisection on
    :math:`\log\beta` in :math:`[\log\beta_{\min}, 0]` until the ESS lies in
    ``[n_min, n_max]`` (the rule of :func:`~genfilter.filters.tempering.find_inflation`,
    column by column, vectorised; ``prior``: log-weights :math:`\log\pi` ``(N,)``, default
    uniform).

    Returns :math:`\beta` ``(P,)``, the tempered ESS ``(P,)`` and the untempered ESS
    ``(P,)``; a column that cannot reach ``n_min`` gets :math:`\beta_{\min}`."""
    base = torch.zeros(ll.shape[0], 1, dtype=ll.dtype) if prior is None else prior[:, None]
    ll = ll.to(torch.float64)
    base = base.to(ll)

    def _ess_at(x: Tensor, scale: Tensor | float) -> Tensor:
        return column_ess(base + x * scale)

    ess1 = _ess_at(ll, 1.0)
    beta = torch.ones(ll.shape[1], dtype=torch.float64)
    todo = ess1 < n_min
    if bool(todo.any()):
        sub = ll[:, todo]
        lo = torch.full((sub.shape[1],), math.log(beta_min), dtype=torch.float64)
        hi = torch.zeros_like(lo)
        done = torch.zeros(sub.shape[1], dtype=torch.bool)
        found = torch.exp(lo)
        for _ in range(iterations):
            mid = (lo + hi) / 2
            e = _ess_at(sub, torch.exp(mid))
            inside = (e >= n_min) & (e <= n_max) & ~done
            found = torch.where(inside, torch.exp(mid), found)
            done |= inside
            if bool(done.all()):
                break
            lo = torch.where(~done & (e > n_max), mid, lo)
            hi = torch.where(~done & (e < n_min), mid, hi)
        found = torch.where(done, found, torch.exp(lo))  # not converged: the lower end
        beta[todo] = found
    ess = _ess_at(ll, beta)
    return beta, ess, ess1


def local_ancestors(log_w: Tensor, u: Tensor | float) -> Tensor:
    r"""Systematic resampling of every column of ``log_w (N, P)`` with the same uniform
    ``u`` in :math:`[0, 1)`: ancestors ``(N, P)`` (int64), sorted in every column.
    Particle :math:`i` of column :math:`j` is the first whose cumulative weight exceeds
    :math:`(u + i)/N`; a column equals :func:`~genfilter.filters.resampling.systematic`
    of its weights with the same :math:`u`, bit for bit."""
    N = log_w.shape[0]
    w = torch.exp(log_w - torch.logsumexp(log_w, 0, keepdim=True))
    cdf = torch.cumsum(w, 0)
    cdf = (cdf / cdf[-1:]).T.contiguous()  # (P, N); exactly 1 at the end (see resampling)
    points = (torch.as_tensor(u, dtype=torch.float64) + torch.arange(N, dtype=torch.float64)) / N
    points = points.clamp(0.0, _ONE_MINUS).expand(cdf.shape[0], N).contiguous()
    return torch.searchsorted(cdf, points, right=True).T.contiguous()
