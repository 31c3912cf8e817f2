r"""The true dynamics as an emulator (DESIGN.md, Core types; SPEC §1).

A *simulated system* is a Markov chain on snapshots

.. math:: x^{k+1} = \Phi(x^k, \xi^k), \qquad \xi^k \sim p(\xi)\ \text{i.i.d.},

where :math:`\Phi` integrates the model equations over one snapshot interval with the
noise :math:`\xi^k` (the Brownian increments of the internal steps).  :class:`StochasticSystem`
holds what every system in :mod:`genfilter.systems` shares — drawing :math:`\xi` from a
``torch.Generator``, stepping in chunks, trajectories — so that each system only says how
to draw its noise and how to integrate one interval.

:class:`SimulatorEmulator` wraps such a system behind the :class:`~genfilter.emulators.base.Emulator`
protocol: ``sample`` is the exact transition, ``predict_mean`` a Monte-Carlo mean, and
``sample_posterior`` is refused (a simulator has no denoiser to guide).

Chunking never changes a result: the noise of *all* particles of a step is drawn from the
generator first, in one call, and only then are the particles integrated slice by slice, so
particle ``i`` is driven by the same increments whatever ``chunk_size`` is.
"""

from __future__ import annotations

__all__ = ["SimulatorEmulator", "StochasticSystem"]

import abc
import operator
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .._utils import chunks
from .base import check_states

if TYPE_CHECKING:  # pragma: no cover
    from ..observations import Observation


class StochasticSystem(abc.ABC):
    r"""Base class of a simulated system :math:`x^{k+1} = \Phi(x^k, \xi^k)`.

    Subclasses set ``state_shape`` and ``interval`` (time between snapshots) and implement

    * :meth:`draw_noise` — the noise :math:`\xi^k` of one interval for ``n`` particles,
      ``(n, ...)``, or ``None`` for a deterministic system;
    * :meth:`advance` — :math:`\Phi`: one interval, deterministic given the noise.
    """

    state_shape: tuple[int, ...]
    interval: float

    # -- to implement -------------------------------------------------------------------

    @abc.abstractmethod
    def draw_noise(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> Tensor | None:
        """The noise of one snapshot interval for ``n`` particles, ``(n, ...)``."""

    @abc.abstractmethod
    def advance(self, x: Tensor, noise: Tensor | None) -> Tensor:
        """Integrates ``x`` ``(n, *S)`` over one snapshot interval driven by ``noise``."""

    # -- shared -------------------------------------------------------------------------

    def _noise(self, n: int, generator: torch.Generator | None, like: Tensor) -> Tensor | None:
        # Draw on the generator's device (CPU generators are the norm), then move: the
        # stream of numbers is then the same whatever device the states live on.
        device = generator.device if generator is not None else like.device
        noise = self.draw_noise(n, generator=generator, dtype=like.dtype, device=device)
        return None if noise is None else noise.to(like.device)

    def _advance_chunked(self, x: Tensor, noise: Tensor | None, chunk_size: int | None) -> Tensor:
        if chunk_size is None or chunk_size >= x.shape[0]:
            return self.advance(x, noise)
        return torch.cat(
            [
                self.advance(x[s], None if noise is None else noise[s])
                for s in chunks(x.shape[0], chunk_size)
            ]
        )

    def step(
        self,
        x: Tensor,
        n_intervals: int = 1,
        generator: torch.Generator | None = None,
        *,
        chunk_size: int | None = None,
    ) -> Tensor:
        r"""Advances a batch ``x`` ``(N, *S)`` by ``n_intervals`` snapshot intervals.

        Randomness comes only from ``generator`` (the global generator if ``None``); the
        result does not depend on ``chunk_size`` (particles integrated ``chunk_size`` at a
        time to bound memory).
        """
        x = check_states(x, self.state_shape, name="x")
        _check_count(n_intervals, "n_intervals", minimum=0)
        with torch.no_grad():
            for _ in range(n_intervals):
                x = self._advance_chunked(x, self._noise(x.shape[0], generator, x), chunk_size)
        return x

    def trajectory(
        self,
        x0: Tensor,
        n_snapshots: int,
        generator: torch.Generator | None = None,
        *,
        chunk_size: int | None = None,
        progress: bool = False,
    ) -> Tensor:
        r"""Snapshots :math:`x^0, \dots, x^K` of ``N`` trajectories started at ``x0`` ``(N, *S)``.

        Returns ``(K + 1, N, *S)`` (time first, ``K = n_snapshots``); ``[0]`` is ``x0``.
        Identical to calling :meth:`step` ``K`` times with the same generator.
        """
        x = check_states(x0, self.state_shape, name="x0")
        _check_count(n_snapshots, "n_snapshots", minimum=0)
        out = x.new_empty((n_snapshots + 1, *x.shape))
        out[0] = x
        steps = range(1, n_snapshots + 1)
        if progress:
            from tqdm.auto import tqdm

            steps = tqdm(steps, desc=f"{type(self).__name__} trajectory", unit="snapshot")
        with torch.no_grad():
            for k in steps:
                x = self._advance_chunked(x, self._noise(x.shape[0], generator, x), chunk_size)
                out[k] = x
        return out

    def as_emulator(
        self, chunk_size: int | None = None, mean_samples: int = 64
    ) -> SimulatorEmulator:
        """This system as an :class:`~genfilter.emulators.base.Emulator` (the true transition)."""
        return SimulatorEmulator(self, chunk_size=chunk_size, mean_samples=mean_samples)


class SimulatorEmulator:
    r"""The true transition :math:`p(x^{k+1} \mid x^k)` of a simulated system as an emulator.

    Arguments:
        system: a :class:`StochasticSystem` (anything with ``state_shape`` and
            ``step(x, n_intervals, generator, *, chunk_size)``).
        chunk_size: particles integrated at a time (``None``: all); results do not depend on it.
        mean_samples: Monte-Carlo draws :math:`M` per particle in :meth:`predict_mean`.
    """

    def __init__(
        self, system: StochasticSystem, chunk_size: int | None = None, mean_samples: int = 64
    ):
        if chunk_size is not None:
            _check_count(chunk_size, "chunk_size", minimum=1)
        _check_count(mean_samples, "mean_samples", minimum=1)
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
        (SPEC §3.1); ``(N, *S) -> (N, *S)``, :math:`M` = ``mean_samples``.

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


def _check_count(value: int, name: str, minimum: int) -> int:
    """Validates an integer count ``>= minimum`` (error naming ``name``); returns it."""
    try:
        ok = not isinstance(value, bool) and operator.index(value) >= minimum
    except TypeError:
        ok = False
    if not ok:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return operator.index(value)


def whole_steps(interval: float, dt: float) -> int:
    """Number of internal steps ``dt`` in one snapshot ``interval``; it must be whole."""
    steps = round(interval / dt)
    if steps < 1 or abs(steps * dt - interval) > 1e-9 * max(1.0, interval):
        raise ValueError(
            f"interval ({interval}) must be a whole number of internal steps dt ({dt})"
        )
    return steps
