r"""An emulator whose optimal proposal is sampled by importance sampling of its own
transitions: with the true model inside, FA-APF on it is the *oracle* FA-APF, the method's
own ceiling without the approximations of a learned emulator (docs/method.md#fa-apf-weights).

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
"""

from __future__ import annotations

__all__ = ["ImportanceSampledEmulator"]

from typing import Any

import torch
from torch import Tensor

from .._utils import check_count, check_states
from ..observations import Observation


class ImportanceSampledEmulator:
    """Wraps an emulator with ``sample``; adds ``predict_mean`` (a Monte-Carlo mean) and
    ``sample_posterior`` (sampling importance resampling over ``draws`` transitions).

    Arguments:
        emulator: Anything with ``state_shape`` and ``sample(x, generator=)``, e.g.
            :func:`~genfilter.emulators.simulator.true_model` of a system.
        draws: Transitions :math:`K` per particle.
    """

    def __init__(self, emulator: Any, draws: int = 200) -> None:
        if not callable(getattr(emulator, "sample", None)):
            raise TypeError("emulator must implement sample()")
        self.emulator = emulator
        self.draws = check_count(draws, "draws", minimum=1)
        self.state_shape = tuple(emulator.state_shape)

    def __repr__(self) -> str:
        return f"ImportanceSampledEmulator({self.emulator!r}, draws={self.draws})"

    def sample(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """The wrapped emulator's transition, ``(N, *S) -> (N, *S)``."""
        return self.emulator.sample(x_prev, generator=generator)

    def _draws(self, x_prev: Tensor, generator) -> Tensor:
        x_prev = check_states(x_prev, self.state_shape)
        K = self.draws
        out = self.emulator.sample(x_prev.repeat_interleave(K, dim=0), generator=generator)
        return out.reshape(x_prev.shape[0], K, *self.state_shape)

    def predict_mean(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Monte-Carlo :math:`\\mathbb{E}[x^{k+1} \\mid x^k]` over ``draws`` transitions."""
        return self._draws(x_prev, generator).mean(1)

    def sample_posterior(
        self, x_prev: Tensor, obs: Observation, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """One draw per particle of :math:`p(x^{k+1} \\mid x^k, y)` by sampling importance
        resampling over ``draws`` transitions (module docstring)."""
        draws = self._draws(x_prev, generator)
        N, K = draws.shape[:2]
        ll = obs.log_likelihood(draws.reshape(N * K, *self.state_shape)).double().reshape(N, K)
        w = torch.softmax(ll, dim=1)
        pick = torch.multinomial(w, 1, generator=generator).squeeze(1)
        return draws[torch.arange(N), pick]
