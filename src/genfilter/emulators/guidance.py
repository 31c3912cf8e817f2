r"""Guided denoisers for the optimal proposal (Savary, Rozet & Louppe 2026, §3.2;
docs/method.md#optimal-proposal and docs/method.md#projected-covariance).

:class:`ProjectedMMPSDenoiser` is MMPS with a *projected* Tweedie covariance.  MMPS
approximates :math:`p(x \mid x_t)` by a Gaussian with covariance
:math:`C = (\sigma_t^2/\alpha_t)\, J`, :math:`J = \partial \hat x / \partial x_t`.  For the exact
denoiser :math:`J` is symmetric positive semi-definite; for a learned one it is neither
(docs/method.md#tweedie-covariance), and with EDM preconditioning the network's part of
:math:`C` is multiplied by :math:`\sigma_t`, so its errors grow with the noise level.  A negative
direction of :math:`C` makes :math:`\Sigma_y + H C H^\top` nearly singular or indefinite and the
guidance step explodes — measured on the shipped Lorenz-63 emulator, setup (b) (``x1`` observed):
the MMPS proposal's variance in the *unobserved* components was 210× (x2) and 135× (x3)
the exact optimal proposal's, against 1.03× and 1.11× with the projection
(``benchmarks/l63_guidance.py``; docs/results/l63.md).

The projection: form :math:`C` densely (``D`` vector–Jacobian products), symmetrise it and
clip its eigenvalues at zero,

.. math::
    \tilde C = V \max(\Lambda, 0) V^\top, \qquad
    V \Lambda V^\top = \tfrac12 (C + C^\top),

then take the exact Gaussian update in closed form,

.. math::
    \mathbb{E}[x \mid x_t, y] \approx \hat x + \tilde C H^\top
        (\Sigma_y + H \tilde C H^\top)^{-1} (y - H(\hat x)),

with :math:`H` the Jacobian of the observation operator at :math:`\hat x`.  This is exactly
MMPS when :math:`J` is symmetric PSD (the linear-Gaussian denoiser), costs ``D + M``
backward passes per diffusion step, and is meant for small states (Lorenz systems);
large states use the Krylov solve on the raw Jacobian (azula's ``MMPSDenoiser``).

:class:`GuidanceWindow` applies a guided denoiser only where :math:`\sigma_t` is small.

The projection is genfilter's, not the paper's (which uses the raw Jacobian with GMRES).

References:
    | Learning Diffusion Priors from Observations by Expectation Maximization (Rozet et al., 2024)
    | https://arxiv.org/abs/2405.13712

    | Training-Free Bayesian Filtering with Generative Emulators (Savary et al., 2026)
    | https://arxiv.org/abs/2605.20028
"""

from __future__ import annotations

__all__ = [
    "ProjectedMMPSDenoiser",
    "GuidanceWindow",
    "projected_covariance",
    "deconvolved_covariance",
    "time_of_log_ratio",
]

from collections.abc import Callable

import torch
from azula.denoise import Denoiser, DiracPosterior
from azula.noise import Schedule
from torch import Tensor


def _rows(out: Tensor, inp: Tensor) -> Tensor:
    """Jacobian ``(N, W, D)`` of ``out (N, *)`` (``W`` values per row) with respect to
    ``inp (N, *)`` (``D`` values per row) by ``W`` vector–Jacobian products (rows are
    independent across the batch)."""
    flat = out.reshape(out.shape[0], -1)
    rows = []
    for k in range(flat.shape[1]):
        e = torch.zeros_like(flat)
        e[:, k] = 1.0
        (g,) = torch.autograd.grad(out, inp, e.reshape(out.shape), retain_graph=True)
        rows.append(g.reshape(g.shape[0], -1))
    return torch.stack(rows, dim=1)


def projected_covariance(jacobian: Tensor, gamma: Tensor | float, clip: bool = True) -> Tensor:
    r""":math:`\tilde C` of the module docstring from ``jacobian (N, D, D)``
    (:math:`J_{n,d,e} = \partial \hat x_d / \partial x_{t,e}`) and :math:`\gamma =
    \sigma_t^2/\alpha_t`; computed in float64, returned ``(N, D, D)`` in float64.
    ``clip=False`` only symmetrises (an ablation: it does not cure the hazard)."""
    C = torch.as_tensor(gamma, dtype=torch.float64) * jacobian.to(torch.float64)
    C = 0.5 * (C + C.transpose(1, 2))
    if not clip:
        return C
    w, V = torch.linalg.eigh(C)
    return (V * w.clamp_min(0.0).unsqueeze(1)) @ V.transpose(1, 2)


def time_of_log_ratio(schedule: Schedule, log_ratio: Tensor, iterations: int = 60) -> Tensor:
    r"""Inverts :math:`t \mapsto \log(\sigma_t / \alpha_t)` (increasing for every azula
    schedule) by vectorised bisection on :math:`[0, 1]`; values outside the schedule's
    range map to 0 or 1.  ``(B,) -> (B,)``, float64."""
    target = log_ratio.to(torch.float64)
    lo, hi = torch.zeros_like(target), torch.ones_like(target)
    for _ in range(iterations):
        mid = (lo + hi) / 2
        alpha, sigma = schedule(mid)
        below = torch.log(sigma / alpha) < target
        lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
    return (lo + hi) / 2


def deconvolved_covariance(covariance: Tensor, ratio: Tensor | float) -> Tensor:
    r"""The covariance :math:`P` of a Gaussian prior from the posterior covariance
    :math:`C = \mathrm{Cov}[x \mid x_t] = (P^{-1} + I/r)^{-1}` at a noise level
    :math:`r = \sigma_t^2/\alpha_t^2`: :math:`P = (C^{-1} - I/r)^{-1}`, eigenvalue by eigenvalue
    :math:`p = c\,r/(r - c)`, with ``c`` clipped to ``[0, (1 - 1e-6) r]`` (so ``p <= 1e6 r``: a denoiser that sees no information gives flat weights).
    ``covariance (N, D, D)`` symmetric PSD (e.g. :func:`projected_covariance`)."""
    r = torch.as_tensor(ratio, dtype=torch.float64)
    w, V = torch.linalg.eigh(covariance.to(torch.float64))
    w = w.clamp(min=0.0, max=float((1 - 1e-6) * r))
    return (V * (w * r / (r - w)).unsqueeze(1)) @ V.transpose(1, 2)


class ProjectedMMPSDenoiser(Denoiser):
    r"""MMPS guidance with the symmetrised, eigenvalue-clipped Tweedie covariance and an
    exact dense solve (module docstring; docs/method.md#projected-covariance).

    Arguments:
        denoiser: The unguided denoiser :math:`\hat x(x_t, t \mid \cdot)` on states
            ``(N, *S)`` with ``D = prod(S)`` values each.
        y: The observation ``(M,)`` (no missing values).
        A: The observation map on the denoiser's variable, ``(N, *S) -> (N, M)``.
        cov_y: The dense noise covariance :math:`\Sigma_y` ``(M, M)``.
        clip: Clip the eigenvalues at zero (``False``: symmetrise only, an ablation).
    """

    def __init__(
        self,
        denoiser: Denoiser,
        y: Tensor,
        A: Callable[[Tensor], Tensor],
        cov_y: Tensor,
        clip: bool = True,
    ) -> None:
        super().__init__()
        if cov_y.shape != (y.shape[-1], y.shape[-1]):
            raise ValueError(
                f"cov_y must be ({y.shape[-1]}, {y.shape[-1]}), got {tuple(cov_y.shape)}"
            )
        self.denoiser, self.y, self.A = denoiser, y, A
        self.cov_y = cov_y.to(torch.float64)
        self.clip = bool(clip)

    @property
    def schedule(self) -> Schedule:
        return self.denoiser.schedule

    @torch.no_grad()
    def forward(self, x_t: Tensor, t: Tensor, **kwargs) -> DiracPosterior:
        alpha, sigma = self.schedule(t)
        with torch.enable_grad():
            x_in = x_t.detach().requires_grad_()
            x_hat = self.denoiser(x_in, t, **kwargs).mean
            J = _rows(x_hat, x_in)
            x_lin = x_hat.detach().requires_grad_()
            y_hat = self.A(x_lin)
            H = _rows(y_hat, x_lin).to(torch.float64)
        C = projected_covariance(J, sigma**2 / alpha, self.clip)
        CHt = C @ H.transpose(1, 2)  # (N, D, M)
        S = H @ CHt + self.cov_y.to(device=x_t.device)
        r = (self.y.to(y_hat) - y_hat.detach()).to(torch.float64)
        u = torch.linalg.solve(S, r.unsqueeze(-1))
        step = (CHt @ u).squeeze(-1)
        return DiracPosterior(mean=x_hat.detach() + step.reshape(x_hat.shape).to(x_hat.dtype))


class GuidanceWindow(Denoiser):
    r"""Uses the guided denoiser only where :math:`\sigma_t \le \sigma_{\max}` and the
    unguided one above it (docs/method.md#projected-covariance: the Tweedie covariance of a
    learned denoiser is least reliable at high noise; a diagnostic, not a cure).

    Arguments:
        guided: The guided (e.g. MMPS) denoiser.
        base: The unguided denoiser.
        sigma_max: The largest noise scale at which guidance is applied.
    """

    def __init__(self, guided: Denoiser, base: Denoiser, sigma_max: float) -> None:
        super().__init__()
        self.guided, self.base, self.sigma_max = guided, base, float(sigma_max)

    @property
    def schedule(self) -> Schedule:
        return self.base.schedule

    def forward(self, x_t: Tensor, t: Tensor, **kwargs) -> DiracPosterior:
        _, sigma_t = self.schedule(t)
        if float(sigma_t.max()) > self.sigma_max:
            return self.base(x_t, t, **kwargs)
        return self.guided(x_t, t, **kwargs)
