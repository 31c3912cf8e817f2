r"""The emulator protocol: how the next state is sampled (DESIGN.md, Core types).

An emulator represents the Markov transition :math:`p(x^{k+1} \mid x^k)` of a dynamical
system (SPEC §1).  Filters only ever talk to this protocol, so a user can plug in any
object with these three methods.

Shapes: a batch of ``N`` states has shape ``(N, *state_shape)``; every method maps a batch
to a batch of the same shape and processes it in slices of ``chunk_size`` particles when
the implementation supports it (results never depend on the slicing).
"""

from __future__ import annotations

__all__ = ["Emulator", "check_states"]

from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from ..observations import Observation


@runtime_checkable
class Emulator(Protocol):
    """Protocol of a transition emulator (DESIGN.md)."""

    state_shape: tuple[int, ...]

    def sample(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Draws :math:`x^{k+1} \sim p(\cdot \mid x^k)`; ``(N, *S) -> (N, *S)``."""
        ...

    def predict_mean(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        r"""Returns :math:`\mathbb{E}[x^{k+1} \mid x^k]` (SPEC §3.1); ``(N, *S) -> (N, *S)``."""
        ...

    def sample_posterior(
        self,
        x_prev: Tensor,
        obs: Observation,
        *,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        r"""Draws from the optimal proposal :math:`p(x^{k+1} \mid x^k, y^{k+1})` (SPEC §4)."""
        ...


def check_states(x: Tensor, state_shape: tuple[int, ...], name: str = "x_prev") -> Tensor:
    """Validates a batch of states: a floating tensor of shape ``(N, *state_shape)``,
    all finite.  Raises ``ValueError`` naming the argument otherwise."""

    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not torch.is_floating_point(x):
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")
    if tuple(x.shape[1:]) != tuple(state_shape) or x.ndim != len(state_shape) + 1:
        raise ValueError(
            f"{name} must have shape (N, {', '.join(map(str, state_shape))}), "
            f"got {tuple(x.shape)}"
        )
    if not torch.isfinite(x).all():
        bad = (~torch.isfinite(x)).flatten(1).any(dim=1).nonzero().flatten()
        raise ValueError(
            f"{name} contains non-finite values in {bad.numel()} particle(s), "
            f"first indices {bad[:5].tolist()}"
        )
    return x
