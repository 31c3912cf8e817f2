"""A test-local exact linear-Gaussian transition sampler (fast: no diffusion)."""

from __future__ import annotations

import torch


class ExactLinearEmulator:
    """``sample(x) = A x + b + chol(Q) ξ`` with ξ from the given generator."""

    def __init__(self, A, b, Q):
        self.A, self.b, self.Q = A, b, Q
        self.L = torch.linalg.cholesky(Q)
        self.state_shape = (A.shape[0],)

    def sample(self, x, *, generator=None):
        xi = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return x @ self.A.T + self.b + xi @ self.L.T
