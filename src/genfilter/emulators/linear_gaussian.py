r"""An exact linear-Gaussian emulator that runs through the :class:`DiffusionEmulator` code
path, so that samplers, MMPS guidance and FA-APF weights can be checked against closed
forms (Kalman filter, Gaussian optimal proposal).

Model: :math:`x^{k+1} = A x^k + b + w`, :math:`w \sim \mathcal{N}(0, Q)` on flat states
``(D,)``.  In the emulator's target space (normalisation and optional residual, see
:mod:`genfilter.emulators.diffusion`) this is :math:`u \mid c \sim \mathcal{N}(F c + g, P)`
with an affine map of ``(A, b, Q)``; for a Gaussian prior the denoiser is exact:

.. math:: \mathbb{E}[u \mid u_t, c] = \mu + \alpha_t P (\alpha_t^2 P + \sigma_t^2 I)^{-1}
    (u_t - \alpha_t \mu), \quad \mu = F c + g

computed with the eigendecomposition :math:`P = U \Lambda U^\top`
(docs/method.md#linear-gaussian-reference).
"""

from __future__ import annotations

__all__ = ["ConditionalGaussianDenoiser", "LinearGaussianEmulator"]

import torch
from azula.denoise import Denoiser, DiracPosterior
from azula.noise import Schedule, VESchedule
from torch import Tensor

from ..observations import Observation, noise_matrix
from .diffusion import DiffusionEmulator


class ConditionalGaussianDenoiser(Denoiser):
    r"""Exact denoiser of :math:`u \mid c \sim \mathcal{N}(F c + g, P)`.

    Arguments:
        F: ``(D, D)``; g: ``(D,)``; P: ``(D, D)`` symmetric positive definite.
        schedule: The noise schedule.
    """

    def __init__(self, F: Tensor, g: Tensor, P: Tensor, schedule: Schedule) -> None:
        super().__init__()
        self.schedule = schedule
        lam, U = torch.linalg.eigh((P + P.T) / 2)
        if lam.min() <= 0:
            raise ValueError(
                f"P must be positive definite, smallest eigenvalue {float(lam.min()):.3g}"
            )
        self.register_buffer("F", F.clone())
        self.register_buffer("g", g.clone())
        self.register_buffer("lam", lam)
        self.register_buffer("U", U)

    def forward(
        self, x_t: Tensor, t: Tensor, cond: Tensor | None = None, **kwargs
    ) -> DiracPosterior:
        if cond is None:
            raise TypeError("ConditionalGaussianDenoiser needs the previous state as cond=")
        kw = dict(dtype=x_t.dtype, device=x_t.device)
        F, g, lam, U = (v.to(**kw) for v in (self.F, self.g, self.lam, self.U))
        alpha, sigma = self.schedule(t.to(**kw))
        alpha = alpha.reshape(-1, 1) if alpha.ndim else alpha
        sigma = sigma.reshape(-1, 1) if sigma.ndim else sigma
        # row-wise products + sums instead of matmul: BLAS picks kernels by batch size, which
        # would change the last bits with the chunking; these reductions do not.
        mu = _rowmat(cond, F) + g
        coef = alpha * lam / (alpha**2 * lam + sigma**2)
        mean = mu + _rowmat(_rowmat(x_t - alpha * mu, U.T) * coef, U)
        return DiracPosterior(mean=mean)


def _rowmat(x: Tensor, W: Tensor) -> Tensor:
    """``x @ W.T`` for ``x (B, D)``, computed row by row (batch-size independent)."""
    return (x.unsqueeze(-2) * W).sum(-1)


class LinearGaussianEmulator(DiffusionEmulator):
    r"""Diffusion emulator of :math:`x^{k+1} = A x^k + b + w`, :math:`w \sim N(0, Q)` with
    an exact analytic denoiser (the reference case of docs/method.md#linear-gaussian-reference).

    Arguments:
        A: ``(D, D)``; b: ``(D,)``; Q: ``(D, D)`` symmetric positive definite.
        schedule: Noise schedule (default VE with :math:`\sigma \in [10^{-3}, 10^2]`, the
            setting of the sampler measurements in docs/core.md).
        kwargs: Passed to :class:`DiffusionEmulator` (``mean``, ``std``, ``residual``,
            ``sampler``, ``steps``, ``eta``, ``solver``, ``iterations``, ``chunk_size``...).
    """

    def __init__(
        self, A: Tensor, b: Tensor, Q: Tensor, *, schedule: Schedule | None = None, **kwargs
    ) -> None:
        A = torch.as_tensor(A, dtype=torch.float64)
        D = A.shape[0]
        if A.shape != (D, D):
            raise ValueError(f"A must be square (D, D), got {tuple(A.shape)}")
        b = torch.as_tensor(b, dtype=torch.float64).reshape(-1)
        if b.shape != (D,):
            raise ValueError(f"b must have shape ({D},), got {tuple(b.shape)}")
        Q = torch.as_tensor(Q, dtype=torch.float64)
        if Q.shape != (D, D):
            raise ValueError(f"Q must have shape ({D}, {D}), got {tuple(Q.shape)}")
        for name, value in (("A", A), ("b", b), ("Q", Q)):
            if not bool(torch.isfinite(value).all()):
                raise ValueError(f"{name} has non-finite values (NaN or ±inf)")
        if (Q - Q.T).abs().max() > 1e-8 * Q.abs().max():
            raise ValueError("Q must be symmetric")
        if torch.linalg.eigvalsh(Q).min() <= 0:
            raise ValueError("Q must be positive definite")
        schedule = schedule or VESchedule(sigma_min=1e-3, sigma_max=1e2)
        # placeholder denoiser, replaced below once normalisation buffers exist
        super().__init__(
            ConditionalGaussianDenoiser(torch.eye(D), torch.zeros(D), torch.eye(D), schedule),
            (D,),
            **kwargs,
        )
        self.A, self.b, self.Q = A, b, Q
        m = self.state_mean.double()
        s = self.state_std.double()
        r = self.residual_std.double()
        # x = m + s*c  ->  x' = A(m + s c) + b + w ;  z' = (x' - m)/s
        Fz = A * s[None, :] / s[:, None]
        gz = (A @ m + b - m) / s
        Pz = Q / (s[:, None] * s[None, :])
        if self.residual:
            F = (Fz - torch.eye(D, dtype=torch.float64)) / r[:, None]
            g = gz / r
            P = Pz / (r[:, None] * r[None, :])
        else:
            F, g, P = Fz, gz, Pz
        self.denoiser = ConditionalGaussianDenoiser(F, g, P, schedule)

    # ------------------------------------------------------------------ closed forms
    def transition_mean(self, x_prev: Tensor) -> Tensor:
        """:math:`A x + b`, ``(N, D)``."""
        return x_prev @ self.A.to(x_prev).T + self.b.to(x_prev)

    def exact_posterior(self, x_prev: Tensor, obs: Observation) -> tuple[Tensor, Tensor]:
        r"""Closed-form optimal proposal :math:`p(x^{k+1} \mid x^k, y)` for a linear ``H``:
        mean ``(N, D)`` and covariance ``(D, D)``,
        :math:`P = (Q^{-1} + H^\top R^{-1} H)^{-1}`, :math:`m = P (Q^{-1}(Ax + b) + H^\top R^{-1} y)`."""
        obs = obs.observed()
        D = self.A.shape[0]
        H = obs.operator(torch.eye(D, dtype=torch.float64)).T
        R = noise_matrix(obs.noise, obs.y.shape[0]).double()
        Qi = torch.linalg.inv(self.Q)
        Ri = torch.linalg.inv(R)
        P = torch.linalg.inv(Qi + H.T @ Ri @ H)
        prior = self.transition_mean(x_prev.double())
        m = (prior @ Qi.T + (H.T @ Ri @ obs.y.double())[None]) @ P.T
        return m.to(x_prev.dtype), P

    def exact_predictive(self, x_prev: Tensor, obs: Observation) -> tuple[Tensor, Tensor]:
        r""":math:`p(y \mid x^k) = N(H(Ax + b), H Q H^\top + R)`: means ``(N, M)``, cov ``(M, M)``."""
        obs = obs.observed()
        D = self.A.shape[0]
        H = obs.operator(torch.eye(D, dtype=torch.float64)).T
        R = noise_matrix(obs.noise, obs.y.shape[0]).double()
        return self.transition_mean(x_prev.double()) @ H.T, H @ self.Q @ H.T + R
