r"""Counting the network passes a sampler or a guidance makes.

The cost of FA-APF is counted in network passes (Savary, Rozet & Louppe 2026, §3.3:
:math:`K(1 + 2n) + 1` per step with MMPS and :math:`n` solver iterations; docs/performance.md).
:class:`PassCountingDenoiser` wraps any azula ``Denoiser`` and counts, on the wrapper itself,

- ``forwards``: calls of the denoiser (each one batched pass over the particles), and
- ``backwards``: backward passes through its output, i.e. vector–Jacobian products of the
  network, as guidance makes them (``torch.autograd.grad`` or ``backward`` through the
  mean). A product taken for a batch of cotangents at once (``torch.func.vmap``) counts once.

It changes nothing else: the posterior it returns has the wrapped mean, bit for bit, and
its gradients are the wrapped network's.

    >>> counting = PassCountingDenoiser(emulator.denoiser)
    >>> emulator.denoiser = counting
    >>> emulator.sample_posterior(x, obs)
    >>> counting.forwards, counting.backwards
"""

from __future__ import annotations

__all__ = ["PassCountingDenoiser"]

from typing import Any

import torch
from azula.denoise import Denoiser, DiracPosterior
from torch import Tensor


class _CountBackward(torch.autograd.Function):
    """Identity whose backward adds one to ``box.backwards``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x: Tensor, box: PassCountingDenoiser) -> Tensor:
        return x.view_as(x)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple, output: Tensor) -> None:
        ctx.box = inputs[1]

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        ctx.box.backwards += 1
        return grad, None


class PassCountingDenoiser(Denoiser):
    """``base`` with a count of its forward calls and of the backward passes through its
    output (module docstring); :meth:`reset` sets both to zero."""

    def __init__(self, base: Denoiser) -> None:
        super().__init__()
        self.base = base
        self.forwards = 0
        self.backwards = 0

    @property
    def schedule(self):
        return self.base.schedule

    def reset(self) -> None:
        self.forwards = 0
        self.backwards = 0

    def forward(self, x_t: Tensor, t: Tensor, **kwargs: Any) -> DiracPosterior:
        self.forwards += 1
        q = self.base(x_t, t, **kwargs)
        return DiracPosterior(mean=_CountBackward.apply(q.mean, self))
