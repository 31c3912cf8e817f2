"""PassCountingDenoiser (emulators/counting.py): counts forward calls and backward passes
through the network's output, and changes nothing else."""

from __future__ import annotations

import torch
from azula.denoise import Denoiser, DiracPosterior
from azula.noise import VPSchedule

from genfilter.emulators import PassCountingDenoiser


class _Quadratic(Denoiser):
    """mean = W x + x² (elementwise): a known Jacobian W + diag(2x)."""

    def __init__(self, W: torch.Tensor) -> None:
        super().__init__()
        self.W = W
        self._schedule = VPSchedule()

    @property
    def schedule(self):
        return self._schedule

    def forward(self, x_t, t, **kwargs):
        return DiracPosterior(mean=x_t @ self.W.T + x_t**2)


def _setup():
    g = torch.Generator().manual_seed(0)
    W = torch.randn(3, 3, generator=g, dtype=torch.float64)
    x = torch.randn(5, 3, generator=g, dtype=torch.float64)
    return _Quadratic(W), W, x, torch.tensor(0.3, dtype=torch.float64)


def test_counts_forwards_and_backwards_and_keeps_values_and_gradients():
    base, W, x, t = _setup()
    counting = PassCountingDenoiser(base)
    assert counting.schedule is base.schedule
    assert (counting.forwards, counting.backwards) == (0, 0)

    xg = x.clone().requires_grad_(True)
    mean = counting(xg, t).mean
    assert torch.equal(mean, base(x, t).mean)
    assert (counting.forwards, counting.backwards) == (1, 0)

    v = torch.randn_like(x)
    (vjp,) = torch.autograd.grad(mean, xg, v, retain_graph=True)
    expected = v @ W + 2 * x * v  # vᵀ J per row, J = W + diag(2x)
    assert torch.allclose(vjp, expected, rtol=0, atol=1e-12)
    assert counting.backwards == 1
    torch.autograd.grad(mean, xg, v)
    assert (counting.forwards, counting.backwards) == (1, 2)

    counting(x, t)
    counting(x, t)
    assert (counting.forwards, counting.backwards) == (3, 2)
    counting.reset()
    assert (counting.forwards, counting.backwards) == (0, 0)


def test_a_batch_of_cotangents_under_vmap_is_one_pass():
    """The D Jacobian rows taken as one vmap'd vector–Jacobian product count once; the rows
    are the known Jacobian."""
    base, W, x, t = _setup()
    counting = PassCountingDenoiser(base)
    mean, pullback = torch.func.vjp(lambda u: counting(u, t).mean, x)
    assert torch.equal(mean, base(x, t).mean)
    basis = torch.eye(3, dtype=x.dtype).unsqueeze(1).expand(3, *x.shape)
    (rows,) = torch.vmap(pullback)(basis)  # rows[d, i] = e_dᵀ J_i
    J = W.unsqueeze(0) + torch.diag_embed(2 * x)  # (N, D, D)
    assert torch.allclose(rows.permute(1, 0, 2), J, rtol=0, atol=1e-12)
    assert (counting.forwards, counting.backwards) == (1, 1)
