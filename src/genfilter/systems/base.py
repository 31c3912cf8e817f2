r"""The simulated systems' common base (the truth of a twin experiment).

A *simulated system* is a Markov chain on snapshots

.. math:: x^{k+1} = \Phi(x^k, \xi^k), \qquad \xi^k \sim p(\xi)\ \text{i.i.d.},

where :math:`\Phi` integrates the model equations over one snapshot interval with the
noise :math:`\xi^k` (the Brownian increments of the internal steps).  :class:`StochasticSystem`
holds what every system shares — drawing :math:`\xi` from a ``torch.Generator``, stepping
in chunks, trajectories — so that each system only says how to draw its noise and how to
integrate one interval.  Systems know nothing of emulators or filters:
:class:`~genfilter.emulators.simulator.SimulatorEmulator` wraps a system to use it as a
forecast model.

Chunking never changes a result: the noise of *all* particles of a step is drawn from the
generator first, in one call, and only then are the particles integrated slice by slice, so
particle ``i`` is driven by the same increments whatever ``chunk_size`` is.
"""

from __future__ import annotations

__all__ = ["StochasticSystem", "check_count", "whole_steps"]

import abc

import torch
from torch import Tensor

from .._utils import check_count, check_states, chunks, whole_steps


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
        check_count(n_intervals, "n_intervals", minimum=0)
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
        check_count(n_snapshots, "n_snapshots", minimum=0)
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
