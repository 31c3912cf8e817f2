r"""The emulator protocol: how the next state is sampled.

An emulator represents the Markov transition :math:`p(x^{k+1} \mid x^k)` of a dynamical
system (Savary, Rozet & Louppe 2026, §2.1; docs/method.md#filtering-problem).  Filters
only ever talk to this protocol, so a user can plug in any object with these three
methods.

Shapes: a batch of ``N`` states has shape ``(N, *state_shape)``; every method maps a batch
to a batch of the same shape and processes it in slices of ``chunk_size`` particles when
the implementation supports it (results never depend on the slicing).
"""

from __future__ import annotations

__all__ = ["Emulator", "check_states"]

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import Tensor

from .._utils import check_states

if TYPE_CHECKING:  # pragma: no cover
    from ..observations import Observation


@runtime_checkable
class Emulator(Protocol):
    """Protocol of a transition emulator: ``sample``, ``predict_mean`` and
    ``sample_posterior`` on batches of states."""

    state_shape: tuple[int, ...]

    def sample(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Draws :math:`x^{k+1} \sim p(\cdot \mid x^k)`; ``(N, *S) -> (N, *S)``."""
        ...

    def predict_mean(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Returns :math:`\mathbb{E}[x^{k+1} \mid x^k]` (paper Eq. 27–28;
        docs/method.md#tweedie-mean); ``(N, *S) -> (N, *S)``."""
        ...

    def sample_posterior(
        self,
        x_prev: Tensor,
        obs: Observation,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""Draws from the optimal proposal :math:`p(x^{k+1} \mid x^k, y^{k+1})`
        (paper §3.2; docs/method.md#optimal-proposal)."""
        ...
