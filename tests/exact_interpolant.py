"""A test-local exact velocity of a stochastic interpolant for a linear-Gaussian transition
(docs/method.md#stochastic-interpolants)."""

from __future__ import annotations

import torch


class ExactVelocity:
    r"""The exact velocity of I_s = α a + β u + σ √s ξ for u | c ~ N(A c + b, Q) with start
    point a = c (or a = 0 with ``residual=True``):

    b(s, x, c) = α' a + β' μ + (β' β Q + σ' σ s I)(β² Q + σ² s I)⁻¹ (x − α a − β μ),

    μ = A c + b, from the joint Gaussian law of (u, ξ, I_s) given c — independent of the
    emulator's velocity-to-score algebra."""

    def __init__(self, A, b, Q, interpolant, residual=False):
        self.A, self.b, self.Q, self.interpolant = A, b, Q, interpolant
        self.residual = residual

    def moments(self, s, c):
        """Mean and covariance of I_s | c: ``(N, D)``, ``(N, D, D)``."""
        al, be, si, *_ = (v.to(c.dtype) for v in self.interpolant.coefficients(s.double()))
        a = torch.zeros_like(c) if self.residual else c
        mu = c @ self.A.T + self.b
        eye = torch.eye(c.shape[1], dtype=c.dtype)
        cov = (be**2)[:, None, None] * self.Q + (s * si**2)[:, None, None] * eye
        return al[:, None] * a + be[:, None] * mu, cov

    def __call__(self, s, x, c):
        al, be, si, dal, dbe, dsi = (
            v.to(x.dtype) for v in self.interpolant.coefficients(s.double())
        )
        a = torch.zeros_like(c) if self.residual else c
        mu = c @ self.A.T + self.b
        eye = torch.eye(x.shape[1], dtype=x.dtype)
        cov = (be**2)[:, None, None] * self.Q + (s * si**2).clamp_min(1e-300)[:, None, None] * eye
        cross = (dbe * be)[:, None, None] * self.Q + (dsi * si * s)[:, None, None] * eye
        r = x - al[:, None] * a - be[:, None] * mu
        gain = cross @ torch.linalg.solve(cov, r.unsqueeze(-1))
        return dal[:, None] * a + dbe[:, None] * mu + gain.squeeze(-1)


def target_model(A, b, Q, mean, std, residual=False, rstd=1.0):
    """(F, g, P) of the transition in target units u | c ~ N(F c + g, P), c = (x − m)/s,
    u = (x' − m)/s or ((x' − m)/s − c)/r."""
    F = A * std[None, :] / std[:, None]
    g = (mean @ A.T + b - mean) / std
    P = Q / torch.outer(std, std)
    if residual:
        F = (F - torch.eye(len(std), dtype=F.dtype)) / rstd
        g, P = g / rstd, P / rstd**2
    return F, g, P
