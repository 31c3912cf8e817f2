r"""The true dynamics as an emulator.

:class:`SimulatorEmulator` wraps a simulated system
(:class:`~genfilter.systems.base.StochasticSystem`) behind the
:class:`~genfilter.emulators.base.Emulator` protocol: ``sample`` is the exact transition,
``predict_mean`` a Monte-Carlo mean, and ``sample_posterior`` is refused (a simulator has
no denoiser to guide).  It is the forecast model of the "true model" rows of the tables
(the Bayes-limit particle filter, the baseline tables).
"""

from __future__ import annotations

__all__ = ["SimulatorEmulator", "true_model"]

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .._utils import check_count, check_states

if TYPE_CHECKING:  # pragma: no cover
    from ..observations import Observation


class SimulatorEmulator:
    r"""The true transition :math:`p(x^{k+1} \mid x^k)` of a simulated system as an emulator.

    Arguments:
        system: a :class:`StochasticSystem` (anything with ``state_shape`` and
            ``step(x, n_intervals, generator, *, chunk_size)``).
        chunk_size: particles integrated at a time (``None``: all); results do not depend on it.
        mean_samples: Monte-Carlo draws :math:`M` per particle in :meth:`predict_mean`.
    """

    def __init__(self, system: Any, chunk_size: int | None = None, mean_samples: int = 64):
        if chunk_size is not None:
            check_count(chunk_size, "chunk_size", minimum=1)
        check_count(mean_samples, "mean_samples", minimum=1)
        self.system = system
        self.chunk_size = chunk_size
        self.mean_samples = mean_samples

    @property
    def state_shape(self) -> tuple[int, ...]:
        return tuple(self.system.state_shape)

    def __repr__(self) -> str:
        return (
            f"SimulatorEmulator({self.system!r}, chunk_size={self.chunk_size}, "
            f"mean_samples={self.mean_samples})"
        )

    def sample(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Draws :math:`x^{k+1} \sim p(\cdot \mid x^k)` by integrating the system over one
        snapshot interval; ``(N, *S) -> (N, *S)``.  Equal to ``system.step(x_prev, 1, generator)``."""
        x_prev = check_states(x_prev, self.state_shape, name="x_prev")
        return self.system.step(x_prev, 1, generator, chunk_size=self.chunk_size)

    def predict_mean(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Monte-Carlo estimate :math:`\frac{1}{M} \sum_{m=1}^{M} x^{k+1}_m`,
        :math:`x^{k+1}_m \sim p(\cdot \mid x^k)`, of :math:`\mathbb{E}[x^{k+1} \mid x^k]`
        (docs/method.md#fa-apf-weights); ``(N, *S) -> (N, *S)``, :math:`M` = ``mean_samples``.

        The :math:`M N` draws are integrated as one batch (chunked by ``chunk_size``); the
        estimate has standard error :math:`\mathrm{sd}(x^{k+1} \mid x^k) / \sqrt{M}`.
        """
        x_prev = check_states(x_prev, self.state_shape, name="x_prev")
        n, m = x_prev.shape[0], self.mean_samples
        repeated = x_prev.unsqueeze(0).expand(m, *x_prev.shape).reshape(m * n, *x_prev.shape[1:])
        draws = self.system.step(repeated, 1, generator, chunk_size=self.chunk_size)
        return draws.reshape(m, n, *x_prev.shape[1:]).mean(dim=0)

    def sample_posterior(
        self,
        x_prev: Tensor,
        obs: Observation,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Refused: a simulator cannot sample the optimal proposal."""
        raise TypeError(
            "SimulatorEmulator cannot sample the optimal proposal p(x^{k+1}|x^k, y): it has no "
            "denoiser; use a DiffusionEmulator or a filter that needs only sample() (BPF, EnKF, ...)"
        )


def true_model(system: Any):
    """The true system as a forecast model: the exact linear-Gaussian emulator (which also
    samples the optimal proposal) for :class:`~genfilter.systems.linear_gaussian.
    LinearGaussian`, the fast numpy loop for deterministic Lorenz-63, otherwise
    :class:`~genfilter.emulators.simulator.SimulatorEmulator`."""
    from ..systems.linear_gaussian import LinearGaussian
    from ..systems.lorenz63 import DeterministicLorenz63, StochasticLorenz63
    from .linear_gaussian import LinearGaussianEmulator

    if isinstance(system, LinearGaussian):
        return LinearGaussianEmulator(system.A, system.b, system.Q, steps=32, iterations=4)
    if isinstance(system, StochasticLorenz63) and float(system.epsilon) == 0.0:
        return DeterministicLorenz63(system)
    return SimulatorEmulator(system)
