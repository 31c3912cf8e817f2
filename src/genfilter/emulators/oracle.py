r"""An emulator whose optimal proposal is sampled by importance sampling of its own
transitions: with the true model inside, FA-APF on it is the *oracle* FA-APF, the method's
own ceiling without the approximations of a learned emulator (docs/method.md#oracle-fa-apf).

For a particle :math:`x^k` and an observation :math:`y`, :math:`K` transitions
:math:`x'_m \sim p(\cdot \mid x^k)` are drawn with the wrapped emulator's ``sample`` and
weighted by :math:`w_m \propto \mathcal{N}(y; H(x'_m), \Sigma_y)`; one of them, drawn by
these weights, is the proposal.  As :math:`K \to \infty` it is an exact draw of
:math:`p(x^{k+1} \mid x^k, y) \propto \mathcal{N}(y; H(x^{k+1}), \Sigma_y)\,
p(x^{k+1} \mid x^k)` (sampling importance resampling; Rubin 1988, Smith & Gelfand 1992).
Its bias is of order :math:`1/K_\mathrm{eff}`, :math:`K_\mathrm{eff}` the effective sample
size of the weights :math:`w_m`: an observation in the tail of the transition needs more
draws.  Combined with ``FAAPF(weights="exact")``, whose weights are the Monte-Carlo average of the same
likelihoods, it is the fully adapted APF with both of its ingredients exact up to Monte-Carlo
error.

**Shared draws.** When FA-APF asks this emulator for its exact weights
(:meth:`ImportanceSampledEmulator.exact_log_likelihoods`), the :math:`K` draws of every
particle are kept, and the proposal of a resampled copy of particle :math:`i` is drawn from
*those* draws by their likelihoods. Ancestor :math:`i` is then chosen with probability
:math:`\propto \sum_m w_{im}` and its draw :math:`m` with probability
:math:`w_{im} / \sum_{m'} w_{im'}`: the pair :math:`(i, m)` with probability
:math:`w_{im} / \sum_{jm'} w_{jm'}`, exactly a bootstrap particle filter with :math:`NK`
draws resampled to :math:`N`. With separate draws for the weights and the proposal the
proposal of a particle whose :math:`K` fresh draws all miss a narrow likelihood is the
least bad of them, wider than the optimal proposal; with shared draws the chosen particle
is one whose draws did not miss.

**Path moves.** With ``moves > 0`` every proposal is then moved by ``moves`` steps of the
preconditioned Crank–Nicolson Metropolis–Hastings kernel on the noise :math:`\xi` that
drives the transition (Cotter, Roberts, Stuart & White 2013, "MCMC methods for functions:
modifying old algorithms to make them faster", Statistical Science 28(3),
doi:10.1214/13-STS421): :math:`\xi' = \sqrt{1 - b^2}\,\xi + b\,\eta`, :math:`\eta` a fresh
draw of the noise, accepted with probability
:math:`\min(1, \mathcal{N}(y; H(\Phi(x^k, \xi')), \Sigma_y) /
\mathcal{N}(y; H(\Phi(x^k, \xi)), \Sigma_y))`, :math:`\Phi` the system's
transition given its noise. The kernel leaves :math:`p(\xi \mid x^k, y)` invariant for any
zero-mean Gaussian noise, so it can only move the proposal towards the optimal one; the
step :math:`b` is drawn for each move and particle from :data:`PCN_STEPS` (a mixture of
invariant kernels is invariant). It needs the wrapped emulator's system
(``emulator.system`` with ``draw_noise`` and ``advance``, as
:class:`~genfilter.emulators.simulator.SimulatorEmulator` has); the copies of one ancestor
then also stop sharing one draw.
"""

from __future__ import annotations

__all__ = ["PCN_STEPS", "ImportanceSampledEmulator"]

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .._utils import check_count, check_states
from ..observations import Observation

PCN_STEPS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
"""The steps :math:`b` of the path moves, one drawn uniformly per move and particle."""


@dataclass
class _Draws:
    """The transitions of :meth:`ImportanceSampledEmulator.exact_log_likelihoods`, kept for
    the proposal of the same step."""

    particles: Tensor  # (N, *S)
    obs: Observation
    states: Tensor  # (N, K, *S)
    noise: Tensor | None  # (N, K, ...) the noise that drove them (path moves only)
    log_likelihoods: Tensor  # (N, K) float64

    def rows(self, x: Tensor) -> Tensor:
        """For each row of ``x``, the index of an equal kept particle, or -1."""
        keys = {bytes(r): i for i, r in enumerate(_row_bytes(self.particles))}
        return torch.tensor([keys.get(bytes(r), -1) for r in _row_bytes(x)], dtype=torch.long)


def _resample_draws(
    log_likelihoods: Tensor, states: Tensor, noise: Tensor | None, generator
) -> tuple[Tensor, Tensor | None]:
    """One of each row's draws ``(n, K, *S)`` by its likelihood (sampling importance
    resampling), and the noise that drove it."""
    pick = torch.multinomial(torch.softmax(log_likelihoods, dim=1), 1, generator=generator)
    rows = torch.arange(states.shape[0])
    pick = pick.squeeze(1)
    return states[rows, pick], None if noise is None else noise[rows, pick]


def _row_bytes(x: Tensor):
    return x.detach().reshape(x.shape[0], -1).cpu().contiguous().numpy()


class ImportanceSampledEmulator:
    """Wraps an emulator with ``sample``; adds ``predict_mean`` (a Monte-Carlo mean),
    ``exact_log_likelihoods`` (FA-APF's exact weights, their draws kept) and
    ``sample_posterior`` (sampling importance resampling over the kept draws, or over
    ``draws`` fresh transitions, then ``moves`` path moves; module docstring).

    Arguments:
        emulator: Anything with ``state_shape`` and ``sample(x, generator=)``, e.g.
            :func:`~genfilter.emulators.simulator.true_model` of a system.
        draws: Transitions :math:`K` per particle of a proposal without kept draws.
        moves: Preconditioned Crank–Nicolson moves per proposal (``0``: none); needs
            ``emulator.system`` with ``draw_noise`` and ``advance`` and Gaussian noise.
        shared_draws: Keep the draws of :meth:`exact_log_likelihoods` for the proposal
            (``False``: every proposal from ``draws`` fresh transitions, the first oracle's
            scheme, whose proposal is wider than the optimal one where the likelihood is
            narrow).
    """

    def __init__(
        self, emulator: Any, draws: int = 200, moves: int = 0, shared_draws: bool = True
    ) -> None:
        if not callable(getattr(emulator, "sample", None)):
            raise TypeError("emulator must implement sample()")
        self.emulator = emulator
        self.draws = check_count(draws, "draws", minimum=1)
        self.moves = check_count(moves, "moves", minimum=0)
        if not isinstance(shared_draws, bool):
            raise TypeError(f"shared_draws must be a bool, got {shared_draws!r}")
        self.shared_draws = shared_draws
        self.state_shape = tuple(emulator.state_shape)
        system = getattr(emulator, "system", None)
        self._system = system if callable(getattr(system, "advance", None)) else None
        if self.moves and self._system is None:
            raise TypeError(
                f"moves={moves} needs an emulator with the system it simulates "
                "(emulator.system with draw_noise and advance, e.g. SimulatorEmulator)"
            )
        self._kept: _Draws | None = None

    def __repr__(self) -> str:
        return (
            f"ImportanceSampledEmulator({self.emulator!r}, draws={self.draws}, moves={self.moves})"
        )

    def sample(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """The wrapped emulator's transition, ``(N, *S) -> (N, *S)``."""
        return self.emulator.sample(x_prev, generator=generator)

    def _transitions(self, x_prev: Tensor, k: int, generator) -> tuple[Tensor, Tensor | None]:
        """``k`` transitions of every particle ``(N, k, *S)`` and, with path moves, the
        noise that drove them ``(N, k, ...)``."""
        x_prev = check_states(x_prev, self.state_shape)
        n = x_prev.shape[0]
        rep = x_prev.repeat_interleave(k, dim=0)
        if not self.moves:
            out = self.emulator.sample(rep, generator=generator)
            return out.reshape(n, k, *self.state_shape), None
        noise = self._noise(rep, generator)
        out = self._system.advance(rep, noise)
        return (
            out.reshape(n, k, *self.state_shape),
            noise.reshape(n, k, *noise.shape[1:]),
        )

    def _noise(self, like: Tensor, generator) -> Tensor:
        noise = self._system._noise(like.shape[0], generator, like)
        if noise is None:
            raise TypeError("path moves need a stochastic system (its draw_noise gave None)")
        return noise

    def predict_mean(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Monte-Carlo :math:`\\mathbb{E}[x^{k+1} \\mid x^k]` over ``draws`` transitions."""
        return self._transitions(x_prev, self.draws, generator)[0].mean(1)

    def exact_log_likelihoods(
        self,
        particles: Tensor,
        obs: Observation,
        samples: int,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""Monte-Carlo :math:`\log p(y \mid x_i)` ``(N,)`` from ``samples`` transitions of
        every particle, kept for the proposals of the same step (:meth:`sample_posterior`
        with the same ``obs``; module docstring, *Shared draws*)."""
        k = check_count(samples, "samples", minimum=1)
        states, noise = self._transitions(particles, k, generator)
        n = states.shape[0]
        ll = obs.log_likelihood(states.reshape(n * k, *self.state_shape)).double().reshape(n, k)
        if self.shared_draws:
            self._kept = _Draws(particles.detach().clone(), obs, states, noise, ll)
        return torch.logsumexp(ll, dim=1) - math.log(k)

    def sample_posterior(
        self, x_prev: Tensor, obs: Observation, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """One draw per particle of :math:`p(x^{k+1} \\mid x^k, y)`: sampling importance
        resampling over the draws kept by :meth:`exact_log_likelihoods` for this ``obs``
        (rows of ``x_prev`` equal to one of its particles) or over ``draws`` fresh
        transitions (the other rows), then ``moves`` path moves (module docstring)."""
        x_prev = check_states(x_prev, self.state_shape)
        n = x_prev.shape[0]
        kept, self._kept = self._kept, None  # one step's draws serve one step
        idx = kept.rows(x_prev) if kept is not None and kept.obs is obs else None
        new = x_prev.new_empty(x_prev.shape)
        noise = None
        fresh = torch.arange(n) if idx is None else (idx < 0).nonzero().flatten()
        old = torch.empty(0, dtype=torch.long) if idx is None else (idx >= 0).nonzero().flatten()
        if old.numel():
            src = idx[old]
            new[old], xi = _resample_draws(
                kept.log_likelihoods[src],
                kept.states[src],
                None if kept.noise is None else kept.noise[src],
                generator,
            )
            if xi is not None:
                noise = xi.new_empty((n, *xi.shape[1:]))
                noise[old] = xi
        if fresh.numel():
            states, xi = self._transitions(x_prev[fresh], self.draws, generator)
            m = fresh.numel()
            flat = states.reshape(m * self.draws, *self.state_shape)
            ll = obs.log_likelihood(flat).double().reshape(m, self.draws)
            new[fresh], xi = _resample_draws(ll, states, xi, generator)
            if xi is not None:
                if noise is None:
                    noise = xi.new_empty((n, *xi.shape[1:]))
                noise[fresh] = xi
        if self.moves:
            new = self._move(x_prev, new, noise, obs, generator)
        return new

    def _move(self, x_prev: Tensor, x: Tensor, xi: Tensor, obs: Observation, generator) -> Tensor:
        """``moves`` preconditioned Crank–Nicolson steps on the noise of every proposal."""
        n = x.shape[0]
        steps = torch.tensor(PCN_STEPS, dtype=xi.dtype)
        ll = obs.log_likelihood(x).double()
        shape = (n,) + (1,) * (xi.ndim - 1)
        for _ in range(self.moves):
            b = steps[torch.randint(len(PCN_STEPS), (n,), generator=generator)].to(xi.device)
            b = b.reshape(shape)
            eta = self._noise(x_prev, generator)
            xi_new = torch.sqrt(1 - b * b) * xi + b * eta
            x_new = self._system.advance(x_prev, xi_new)
            ll_new = obs.log_likelihood(x_new).double()
            u = torch.rand(n, dtype=torch.float64, generator=generator)
            accept = torch.log(u) < (ll_new - ll)
            x = torch.where(accept.reshape((n,) + (1,) * (x.ndim - 1)).to(x.device), x_new, x)
            xi = torch.where(accept.reshape(shape).to(xi.device), xi_new, xi)
            ll = torch.where(accept, ll_new, ll)
        return x
