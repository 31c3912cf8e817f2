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
large states use :class:`ObservedMMPSDenoiser` (below) or the Krylov solve on the raw
Jacobian (azula's ``MMPSDenoiser``).

:func:`projected_mmps_mean` is the same computation as one traceable function, for
``torch.compile`` (``DiffusionEmulator(compile=True)``): the ``D`` Jacobian rows come from one
batched vector–Jacobian product; :class:`CompiledProjectedMMPS` runs it compiled whole for
batches up to 512 particles and, above, the compiled network with the compiled
:func:`projected_update` (docs/performance.md).

:class:`GuidanceWindow` applies a guided denoiser only where :math:`\sigma_t` is small.

The projection is genfilter's, not the paper's (which uses the raw Jacobian with GMRES).

:class:`KrylovMMPSDenoiser` is MMPS on the raw Tweedie covariance with a matrix-free Krylov
solve of :math:`(\Sigma_y + H C H^\top) v = y - H(\hat x)`; it adds the batched
:func:`bicgstab` (van der Vorst 1992; the solver of the authors' GenCast run, 2 iterations) to
azula's CG and GMRES.

:class:`ObservedMMPSDenoiser` is the matrix-free robust variant for large states
(docs/method.md#observation-space-projection): the Tweedie covariance is seen only through
the ``M × M`` matrix :math:`S = \Sigma_y^{-1/2} H C H^\top \Sigma_y^{-\top/2}` (or its
Rayleigh–Ritz projection on a Krylov subspace), whose symmetric part is eigendecomposed; a
direction with a non-positive eigenvalue gets no update, because for a PSD covariance zero
observed variance implies zero cross-covariance.  Cost ``M + 1`` (or ``k + 1``) backward
passes per call, never ``D``.

:class:`DPSDenoiser` is diffusion posterior sampling (Chung et al. 2023) written as a guided
denoiser: the likelihood :math:`\mathcal{N}(y; H(\hat x), \Sigma_y)` without the Tweedie
covariance, one vector–Jacobian product per call (docs/method.md#dps-guidance).

References:
    | Learning Diffusion Priors from Observations by Expectation Maximization (Rozet et al., 2024)
    | https://arxiv.org/abs/2405.13712

    | Training-Free Bayesian Filtering with Generative Emulators (Savary et al., 2026)
    | https://arxiv.org/abs/2605.20028

    | Diffusion Posterior Sampling for General Noisy Inverse Problems (Chung et al., 2023)
    | https://arxiv.org/abs/2209.14687

    | Bi-CGSTAB: A Fast and Smoothly Converging Variant of Bi-CG for the Solution of
    | Nonsymmetric Linear Systems (van der Vorst, 1992)
    | SIAM Journal on Scientific and Statistical Computing 13(2), 631-644

    | The Conjugate Gradient Method and Trust Regions in Large Scale Optimization
    | (Steihaug, 1983)
    | SIAM Journal on Numerical Analysis 20(3), 626-637

    | On the Nyström Method for Approximating a Gram Matrix for Improved Kernel-Based
    | Learning (Drineas & Mahoney, 2005)
    | Journal of Machine Learning Research 6, 2153-2175
"""

from __future__ import annotations

__all__ = [
    "ProjectedMMPSDenoiser",
    "KrylovMMPSDenoiser",
    "ObservedMMPSDenoiser",
    "DPSDenoiser",
    "GuidanceWindow",
    "bicgstab",
    "projected_covariance",
    "projected_mmps_mean",
    "projected_update",
    "CompiledProjectedMMPS",
    "psd_projection_3x3",
    "deconvolved_covariance",
    "time_of_log_ratio",
]

import math
from collections.abc import Callable
from functools import partial

import torch
from azula.denoise import Denoiser, DiracPosterior
from azula.linalg.covariance import Covariance, DiagonalCovariance, IsotropicCovariance
from azula.linalg.solve import cg, gmres
from azula.noise import Schedule
from torch import Tensor


def _rows(out: Tensor, inp: Tensor) -> Tensor:
    """Jacobian ``(N, W, D)`` of ``out (N, *)`` (``W`` values per row) with respect to
    ``inp (N, *)`` (``D`` values per row) by ``W`` vector–Jacobian products (rows are
    independent across the batch).  One backward call per product: a single vectorised
    call (``is_grads_batched``) was measured 15 % faster for the Lorenz-63 denoiser at
    N = 64 but 21 % slower at N = 1024, and switching on the batch size would break the
    bit-identity of multi-process runs (``benchmarks/performance.py``, docs/performance.md)."""
    flat = out.reshape(out.shape[0], -1)
    eye = torch.eye(flat.shape[1], dtype=out.dtype, device=out.device)
    rows = []
    for k in range(flat.shape[1]):
        e = eye[k].expand_as(flat).reshape(out.shape)
        (g,) = torch.autograd.grad(out, inp, e, retain_graph=True)
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
    if not torch.compiler.is_compiling():
        # a positive-definite row is its own projection: a Cholesky test (much cheaper than
        # the eigendecomposition) sends only the other rows to eigh
        return _clip_rows(C, torch.linalg.cholesky_ex(C).info != 0)
    if C.shape[-1] == 3:
        # in the graph, no branch (Lorenz-63): eigh of the data-dependent rows would split
        # the graph in two (docs/performance.md, table 4, measures the difference)
        return psd_projection_3x3(C)
    return _clip_between_graphs(C)


def psd_projection_3x3(C: Tensor) -> Tensor:
    r"""The eigenvalue-clipped projection :math:`V \max(\Lambda, 0) V^\top` of symmetric
    ``C (N, 3, 3)`` in closed form, with no eigenvectors and no LAPACK call: what
    ``torch.compile`` runs inside a guided call for 3-dimensional states.

    The eigenvalues :math:`\lambda_1 \le \lambda_2 \le \lambda_3` come from the
    trigonometric solution of the characteristic cubic (Smith, "Eigenvalues of a symmetric
    3 × 3 matrix", Communications of the ACM 4(4), 1961).  The projection is then a
    polynomial in ``C`` (the spectral projector of a simple eigenvalue is
    :math:`\prod_{j \ne k} (C - \lambda_j I)/(\lambda_k - \lambda_j)`):

    - no negative eigenvalue: :math:`C`;
    - one (:math:`\lambda_1 < 0 \le \lambda_2`): :math:`C - \lambda_1 (C - \lambda_2 I)(C -
      \lambda_3 I) / ((\lambda_1 - \lambda_2)(\lambda_1 - \lambda_3))`;
    - two (:math:`\lambda_2 < 0 \le \lambda_3`): :math:`\lambda_3 (C - \lambda_1 I)(C -
      \lambda_2 I) / ((\lambda_3 - \lambda_1)(\lambda_3 - \lambda_2))`;
    - three: 0.

    The signs keep it stable where eigenvalues meet: in the one-negative case
    :math:`|\lambda_1| \le |\lambda_1 - \lambda_2|` and :math:`|\lambda_1 - \lambda_3|` is of
    the order of :math:`\|C\|`, so an eigenvalue error :math:`\delta` moves the result by
    about :math:`\delta` (symmetrically in the two-negative case), even when
    :math:`\lambda_1 \approx \lambda_2 \approx 0`.  The trigonometric solution itself loses
    half the digits at a double eigenvalue (:math:`\delta \approx 10^{-8} \|C\|` in float64),
    far below the float32 precision of the network Jacobian that ``C`` comes from.  Test
    ``test_closed_form_projection_is_the_eigh_projection``: equal to the ``eigh`` projection to
    ``1e-12`` of the largest entry on random matrices, and to ``1e-7`` on nearly degenerate and
    rank-deficient ones."""
    eye = torch.eye(3, dtype=C.dtype, device=C.device)
    q = C.diagonal(dim1=-2, dim2=-1).sum(-1) / 3
    B = C - q[:, None, None] * eye
    off = C[:, 0, 1] ** 2 + C[:, 0, 2] ** 2 + C[:, 1, 2] ** 2
    p = torch.sqrt(((B.diagonal(dim1=-2, dim2=-1) ** 2).sum(-1) + 2 * off) / 6)
    det = (
        B[:, 0, 0] * (B[:, 1, 1] * B[:, 2, 2] - B[:, 1, 2] * B[:, 2, 1])
        - B[:, 0, 1] * (B[:, 1, 0] * B[:, 2, 2] - B[:, 1, 2] * B[:, 2, 0])
        + B[:, 0, 2] * (B[:, 1, 0] * B[:, 2, 1] - B[:, 1, 1] * B[:, 2, 0])
    )
    flat = p == 0  # C = qI
    ps = torch.where(flat, torch.ones_like(p), p)
    phi = torch.acos((det / (2 * ps**3)).clamp(-1.0, 1.0)) / 3
    l3 = q + 2 * p * torch.cos(phi)
    l1 = q + 2 * p * torch.cos(phi + 2 * math.pi / 3)
    l2 = 3 * q - l1 - l3
    one = l1 < 0
    two = l2 < 0
    three = l3 < 0

    def shift(lam: Tensor) -> Tensor:
        return C - lam[:, None, None] * eye

    def safe(den: Tensor, used: Tensor) -> Tensor:
        return torch.where(used, den, torch.ones_like(den))[:, None, None]

    only_one = one & ~two
    only_two = two & ~three
    P1 = C - l1[:, None, None] * (shift(l2) @ shift(l3)) / safe((l1 - l2) * (l1 - l3), only_one)
    P2 = l3[:, None, None] * (shift(l1) @ shift(l2)) / safe((l3 - l1) * (l3 - l2), only_two)
    P = torch.where(only_one[:, None, None], P1, C)
    P = torch.where(only_two[:, None, None], P2, P)
    return torch.where(three[:, None, None], torch.zeros_like(C), P)


def _clip_rows(C: Tensor, bad: Tensor) -> Tensor:
    """``C`` with the rows ``bad`` replaced by their eigenvalue-clipped projection."""
    if not bool(bad.any()):
        return C
    w, V = torch.linalg.eigh(C[bad])
    C = C.clone()
    C[bad] = (V * w.clamp_min(0.0).unsqueeze(1)) @ V.transpose(1, 2)
    return C


# under torch.compile the clipping runs eagerly between two graphs: its shapes depend on
# the data, and tracing it would recompile for every count of bad rows (eager code calls
# the plain function: the decorator's own overhead, per call, is of the order of the
# whole eager covariance computation at small N)
_clip_rows_eagerly = torch.compiler.disable(_clip_rows)


def _clip_between_graphs(C: Tensor) -> Tensor:
    """The clipping inside a compiled call for ``D != 3``: the Cholesky test in the graph,
    ``eigh`` of the rows that fail it eagerly between two graphs."""
    return _clip_rows_eagerly(C, torch.linalg.cholesky_ex(C).info != 0)


def projected_mmps_mean(
    denoiser: Denoiser,
    x_t: Tensor,
    t: Tensor,
    cond: Tensor,
    y: Tensor,
    H: Tensor,
    cov_y: Tensor,
    offset: Tensor,
) -> Tensor:
    r"""The mean of :class:`ProjectedMMPSDenoiser` for an affine observation map, written as
    one function that ``torch.compile`` traces whole (``DiffusionEmulator(compile=True)``).

    The Tweedie mean :math:`\hat x` and its ``D`` Jacobian rows come from one batched
    vector–Jacobian product (``torch.func.vjp`` under ``torch.func.vmap``: a compiler runs
    the ``D`` cotangents as one backward pass); the covariance is
    :func:`projected_covariance`'s; the observation map is
    :math:`A(\hat x) = \mathrm{offset} + H \hat x`.  Eager, this is
    slower than :class:`ProjectedMMPSDenoiser` (the batched product runs through torch's
    Python transforms); it exists to be compiled.

    Arguments:
        denoiser: The unguided denoiser, called as ``denoiser(x_t, t, cond=cond)``.
        x_t: Noisy states ``(N, *S)``, ``D = prod(S)``.
        t: The diffusion time (a scalar tensor).
        cond: The condition of the denoiser ``(N, ...)``.
        y: The observation ``(M,)``, float64.
        H: The matrix ``(M, D)`` of the map's linear part, float64.
        cov_y: The dense noise covariance ``(M, M)``, float64.
        offset: The map at :math:`\hat x = 0`, ``(N, M)`` float64.

    Returns the guided mean ``(N, *S)`` in the dtype of ``x_t``.
    """
    n, D = x_t.shape[0], math.prod(x_t.shape[1:])

    def mean(x: Tensor) -> Tensor:
        return denoiser(x, t, cond=cond).mean

    with torch.enable_grad():
        x_hat, vjp = torch.func.vjp(mean, x_t.detach())
        eye = torch.eye(D, dtype=x_hat.dtype, device=x_hat.device)
        (rows,) = torch.func.vmap(vjp)(eye.reshape(D, 1, *x_t.shape[1:]).expand(D, *x_t.shape))
    J = rows.detach().reshape(D, n, D).transpose(0, 1)  # J[n, d, e] = d x_hat_d / d x_e
    alpha, sigma = denoiser.schedule(t)
    return projected_update(x_hat.detach(), J, sigma**2 / alpha, y, H, cov_y, offset)


def projected_update(
    x_hat: Tensor, J: Tensor, gamma: Tensor, y: Tensor, H: Tensor, cov_y: Tensor, offset: Tensor
) -> Tensor:
    r"""What :func:`projected_mmps_mean` does after the network passes: the projected
    covariance of the Tweedie mean ``x_hat (N, *S)`` and its Jacobian ``J (N, D, D)``
    (:math:`J_{n,d,e} = \partial \hat x_d / \partial x_{t,e}`, :math:`\gamma =
    \sigma_t^2/\alpha_t`) and the Gaussian update with the affine map
    :math:`\mathrm{offset} + H \hat x` (arguments as in :func:`projected_mmps_mean`)."""
    n, D = J.shape[0], J.shape[-1]
    # for D != 3 its branch on the Cholesky test splits a compiled graph in two (faster, in
    # a one-off measurement at N = 64 and 1024, than eigendecomposing every row in one graph)
    C = projected_covariance(J, gamma)
    r = y - offset - x_hat.reshape(n, D).to(torch.float64) @ H.transpose(0, 1)
    return _gaussian_update(x_hat, C, H, cov_y, r)


class CompiledProjectedMMPS:
    r"""The guided call of ``DiffusionEmulator(compile=True)`` for the projected covariance
    and an affine observation map (the ``fused`` argument of :class:`ProjectedMMPSDenoiser`).

    Up to ``max_fused_rows`` particles it runs :func:`projected_mmps_mean` compiled whole
    (the network's forward pass, the ``D`` Jacobian rows as one batched backward pass, the
    covariance and the solve in one graph); above, the compiled network ``net`` with its
    ``D`` rows by separate vector–Jacobian products, then :func:`projected_update`
    compiled. On the shipped Lorenz-63 denoiser (one CPU thread) the whole graph is faster
    up to N = 512 (0.80–1.04× the time of the network passes it makes, against 1.12–1.24×
    split) and slower at N = 1024 (1.15× against 1.08×; docs/performance.md, ``python
    benchmarks/compiled_guidance.py``). Both give the same mean to floating-point
    tolerance (bitwise in those measurements, not guaranteed elsewhere).

    Arguments:
        net: The compiled denoiser (``DiffusionEmulator.net``), used above the threshold.
        max_fused_rows: The largest batch run as one graph.
    """

    def __init__(self, net: Denoiser, max_fused_rows: int = 512) -> None:
        self.net, self.max_fused_rows = net, int(max_fused_rows)
        self.whole = torch.compile(projected_mmps_mean, dynamic=False)
        self.update = torch.compile(projected_update, dynamic=False)

    def __call__(
        self,
        denoiser: Denoiser,
        x_t: Tensor,
        t: Tensor,
        cond: Tensor,
        y: Tensor,
        H: Tensor,
        cov_y: Tensor,
        offset: Tensor,
    ) -> Tensor:
        if x_t.shape[0] <= self.max_fused_rows:
            return self.whole(denoiser, x_t, t, cond, y, H, cov_y, offset)
        with torch.enable_grad():
            x_in = x_t.detach().requires_grad_()
            x_hat = self.net(x_in, t, cond=cond).mean
            J = _rows(x_hat, x_in)
        alpha, sigma = denoiser.schedule(t)
        return self.update(x_hat.detach(), J.detach(), sigma**2 / alpha, y, H, cov_y, offset)


def _gaussian_update(x_hat: Tensor, C: Tensor, H: Tensor, cov_y: Tensor, r: Tensor) -> Tensor:
    r""":math:`\hat x + C H^\top (H C H^\top + \Sigma_y)^{-1} r` with ``C (N, D, D)``,
    ``H (M, D)``, ``cov_y (M, M)`` and the residual ``r (N, M)`` in float64; returned in the
    dtype and shape of ``x_hat``."""
    CHt = C @ H.transpose(-1, -2)  # (N, D, M)
    S = H @ CHt + cov_y
    u = torch.linalg.solve(S, r.unsqueeze(-1))
    step = (CHt @ u).squeeze(-1)
    return x_hat + step.reshape(x_hat.shape).to(x_hat.dtype)


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


class _GuidedDenoiser(Denoiser):
    r"""What the guided denoisers share: the wrapped denoiser's schedule, and the Tweedie
    mean :math:`\hat x(x_t)` with the autograd graph through the denoiser and ``A``."""

    denoiser: Denoiser
    A: Callable[[Tensor], Tensor]
    A_lin: Callable[[Tensor], Tensor] | None = None

    @property
    def schedule(self) -> Schedule:
        return self.denoiser.schedule

    def _jvp_A(self, x_hat: Tensor, v: Tensor) -> Tensor:
        r"""The Jacobian of ``A`` at :math:`\hat x` times ``v``: ``A_lin(v)`` when ``A`` is
        affine with linear part ``A_lin`` (no differentiation), else a forward-mode JVP."""
        if self.A_lin is not None:
            return self.A_lin(v)
        return torch.func.jvp(self.A, (x_hat.detach(),), (v,))[1]

    def _tweedie(self, x_t: Tensor, t: Tensor, kwargs) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        r""":math:`\gamma_t = \sigma_t^2/\alpha_t`, the input ``x_in`` (requires grad),
        :math:`\hat x` and :math:`A(\hat x)`, both differentiable with respect to ``x_in``."""
        alpha_t, sigma_t = self.schedule(t)
        with torch.enable_grad():
            x_in = x_t.detach().requires_grad_()
            x_hat = self.denoiser(x_in, t, **kwargs).mean
            y_hat = self.A(x_hat)
        return sigma_t**2 / alpha_t, x_in, x_hat, y_hat


class ProjectedMMPSDenoiser(_GuidedDenoiser):
    r"""MMPS guidance with the symmetrised, eigenvalue-clipped Tweedie covariance and an
    exact dense solve (module docstring; docs/method.md#projected-covariance).

    Arguments:
        denoiser: The unguided denoiser :math:`\hat x(x_t, t \mid \cdot)` on states
            ``(N, *S)`` with ``D = prod(S)`` values each.
        y: The observation ``(M,)`` (no missing values).
        A: The observation map on the denoiser's variable, ``(N, *S) -> (N, M)``.
        cov_y: The dense noise covariance :math:`\Sigma_y` ``(M, M)``.
        clip: Clip the eigenvalues at zero (``False``: symmetrise only, an ablation).
        H: The Jacobian ``(M, D)`` of ``A`` when ``A`` is affine (the same at every point,
            formed once by the caller); ``None``: ``M`` vector–Jacobian products of ``A`` at
            :math:`\hat x` in every call.
        fused: With ``H`` and ``offset``: a callable with the signature of
            :func:`projected_mmps_mean` (typically its ``torch.compile``\ d form) that
            computes the whole call; the denoiser must take its condition as ``cond=``.
        offset: ``A`` at zero, ``(N, M)`` (needed by ``fused``).
    """

    def __init__(
        self,
        denoiser: Denoiser,
        y: Tensor,
        A: Callable[[Tensor], Tensor],
        cov_y: Tensor,
        clip: bool = True,
        H: Tensor | None = None,
        fused: Callable[..., Tensor] | None = None,
        offset: Tensor | None = None,
    ) -> None:
        super().__init__()
        M = y.shape[-1]
        if cov_y.shape != (M, M):
            raise ValueError(f"cov_y must be ({M}, {M}), got {tuple(cov_y.shape)}")
        if H is not None and (H.ndim != 2 or H.shape[0] != M):
            raise ValueError(f"H must be ({M}, D), got {tuple(H.shape)}")
        self.denoiser, self.y, self.A = denoiser, y, A
        self.cov_y = cov_y.to(torch.float64)
        self.clip = bool(clip)
        self.H = None if H is None else H.to(torch.float64)
        if fused is not None and (H is None or offset is None or not clip):
            raise ValueError("fused needs H and offset (an affine observation map) and clip=True")
        self.fused = fused
        self.offset = None if offset is None else offset.to(torch.float64)
        self.y64 = y.to(torch.float64)  # what the fused call takes

    @torch.no_grad()
    def forward(self, x_t: Tensor, t: Tensor, **kwargs) -> DiracPosterior:
        if self.fused is not None:
            mean = self.fused(
                self.denoiser,
                x_t,
                t,
                kwargs["cond"],
                self.y64.to(device=x_t.device),
                self.H.to(device=x_t.device),
                self.cov_y.to(device=x_t.device),
                self.offset.to(device=x_t.device),
            )
            return DiracPosterior(mean=mean)
        alpha, sigma = self.schedule(t)
        with torch.enable_grad():
            x_in = x_t.detach().requires_grad_()
            x_hat = self.denoiser(x_in, t, **kwargs).mean
            J = _rows(x_hat, x_in)
            if self.H is None:
                x_lin = x_hat.detach().requires_grad_()
                y_hat = self.A(x_lin)
                H = _rows(y_hat, x_lin).to(torch.float64)
            else:
                y_hat = self.A(x_hat.detach())
                H = self.H.to(device=x_t.device)
        C = projected_covariance(J, sigma**2 / alpha, self.clip)
        r = (self.y.to(y_hat) - y_hat.detach()).to(torch.float64)
        cov_y = self.cov_y.to(device=x_t.device)
        return DiracPosterior(mean=_gaussian_update(x_hat.detach(), C, H, cov_y, r))


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


# ---------------------------------------------------------------------------- BiCGStab
def bicgstab(
    A: Callable[[Tensor], Tensor],
    b: Tensor,
    x0: Tensor | None = None,
    iterations: int = 2,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""Solves :math:`A x = b` by BiCGStab iterations (van der Vorst 1992, Algorithm
    "Bi-CGSTAB", unpreconditioned, shadow residual :math:`\hat r_0 = r_0`), batched: every
    leading index of ``b (*, M)`` is an independent system, and ``A`` maps ``(*, M)`` to
    ``(*, M)`` row by row (e.g. a vector–Jacobian product of a denoiser over particles).

    ``A`` need not be symmetric.  Each iteration costs two products with ``A``.  As in azula's
    ``cg`` and ``gmres`` (same signature), exactly ``iterations`` iterations run for every
    system (no data-dependent early exit, so nothing waits on the host), with the
    intermediate vectors in ``dtype`` (default float64).  Breakdown guard: a system whose
    :math:`\rho = \langle \hat r_0, r\rangle`, :math:`\langle \hat r_0, v\rangle` or
    :math:`\langle t, s\rangle` is below ``eps`` times the product of the norms (this covers a
    residual that is already exactly zero, a converged system) stops being updated from that
    iteration on — after taking the half step :math:`x + \alpha p` when only the last
    quantity vanishes — so its iterate stays finite; the products with ``A`` of the stopped
    systems are fed zeros.

    Returns the last iterate ``(*, M)`` in the dtype of ``b``.
    """
    if int(iterations) < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    dtype = dtype or torch.float64
    eps = torch.finfo(dtype).eps

    def dot(u: Tensor, v: Tensor) -> Tensor:
        return torch.einsum("...i,...i", u, v)

    def norm(u: Tensor) -> Tensor:
        return torch.linalg.vector_norm(u, dim=-1)

    def mv(u: Tensor) -> Tensor:
        return A(u.to(b)).to(dtype)

    def safe(d: Tensor) -> Tensor:
        return torch.where(d == 0, torch.ones_like(d), d)

    def pick(mask: Tensor, new: Tensor, old: Tensor) -> Tensor:
        return torch.where(mask[..., None] if new.ndim > mask.ndim else mask, new, old)

    if x0 is None:
        x = torch.zeros_like(b, dtype=dtype)
        r = b.to(dtype)
    else:
        x = x0.to(dtype)
        r = (b - A(x0)).to(dtype)
    r_hat = r.clone()
    n_hat = norm(r_hat)
    ones = torch.ones(r.shape[:-1], dtype=dtype, device=r.device)
    rho, alpha, omega = ones, ones, ones
    p = torch.zeros_like(r)
    v = torch.zeros_like(r)
    active = torch.isfinite(r).all(dim=-1) & (n_hat > 0)
    for _ in range(int(iterations)):
        rho_new = dot(r_hat, r)
        active = active & (rho_new.abs() > eps * n_hat * norm(r))
        beta = (rho_new / safe(rho)) * (alpha / safe(omega))
        p_new = pick(active, r + beta[..., None] * (p - omega[..., None] * v), torch.zeros_like(p))
        v_new = mv(p_new)
        rv = dot(r_hat, v_new)
        half = active & (rv.abs() > eps * n_hat * norm(v_new))
        alpha_new = rho_new / safe(rv)
        s = r - alpha_new[..., None] * v_new
        t = mv(pick(half, s, torch.zeros_like(s)))
        ts = dot(t, s)
        full = half & (ts.abs() > eps * norm(t) * norm(s))
        omega_new = ts / safe(dot(t, t))
        x_half = x + alpha_new[..., None] * p_new
        x = pick(full, x_half + omega_new[..., None] * s, pick(half, x_half, x))
        r = pick(full, s - omega_new[..., None] * t, pick(half, s, r))
        rho = torch.where(full, rho_new, rho)
        alpha = torch.where(full, alpha_new, alpha)
        omega = torch.where(full, omega_new, omega)
        p = pick(full, p_new, p)
        v = pick(full, v_new, v)
        active = full
    return x.to(b)


SOLVERS: dict[str, Callable[..., Tensor]] = {"bicgstab": bicgstab, "cg": cg, "gmres": gmres}
"""Matrix-free solvers of :class:`KrylovMMPSDenoiser` (``cg``, ``gmres``: azula's)."""


class KrylovMMPSDenoiser(_GuidedDenoiser):
    r"""MMPS guidance on the raw Tweedie covariance :math:`C = (\sigma_t^2/\alpha_t)
    \partial \hat x / \partial x_t` with a matrix-free Krylov solve (Rozet et al. 2024;
    docs/method.md#optimal-proposal):

    .. math::
        (\Sigma_y + H C H^\top)\, v = y - H(\hat x), \qquad
        \mathbb{E}[x \mid x_t, y] \approx \hat x + \frac{\sigma_t^2}{\alpha_t}
            \Big(\frac{\partial H(\hat x)}{\partial x_t}\Big)^{\!\top} v .

    The same computation as azula's ``MMPSDenoiser`` (:math:`C` through vector–Jacobian
    products of the denoiser, :math:`H` through a JVP and a VJP of ``A`` at :math:`\hat x`),
    with :func:`bicgstab` added to its solvers.  Cost per call: one forward and
    :math:`1 + k` backward passes of the denoiser, :math:`k` = ``iterations`` for
    ``"cg"`` and ``"gmres"`` and ``2 × iterations`` for ``"bicgstab"``.

    Arguments:
        denoiser: The unguided denoiser.
        y: The observation ``(M,)`` (no missing values).
        A: The observation map on the denoiser's variable, ``(N, *S) -> (N, M)``.
        cov_y: The noise covariance :math:`\Sigma_y` (an azula covariance).
        solver: ``"bicgstab"`` (default), ``"gmres"`` or ``"cg"``.
        iterations: Solver iterations (fixed count).
        A_lin: The linear part of ``A`` when ``A`` is affine (:math:`v \mapsto H v`); its
            products replace the forward-mode JVPs of ``A`` (``None``: JVPs).
    """

    def __init__(
        self,
        denoiser: Denoiser,
        y: Tensor,
        A: Callable[[Tensor], Tensor],
        cov_y: Covariance,
        solver: str = "bicgstab",
        iterations: int = 2,
        A_lin: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        if solver not in SOLVERS:
            raise ValueError(f"solver must be one of {sorted(SOLVERS)}, got {solver!r}")
        if int(iterations) < 1:
            raise ValueError(f"iterations must be >= 1, got {iterations}")
        self.denoiser, self.y, self.A, self.cov_y = denoiser, y, A, cov_y
        self.solver, self.iterations = solver, int(iterations)
        self.solve = partial(SOLVERS[solver], iterations=self.iterations)
        self.A_lin = A_lin

    @torch.no_grad()
    def forward(self, x_t: Tensor, t: Tensor, **kwargs) -> DiracPosterior:
        gamma_t, x_t, x_hat, y_hat = self._tweedie(x_t, t, kwargs)

        def A(v: Tensor) -> Tensor:
            return self._jvp_A(x_hat, v)

        def At(v: Tensor) -> Tensor:
            return torch.autograd.grad(y_hat, x_hat, v, retain_graph=True)[0]

        def cov_x(v: Tensor) -> Tensor:
            return gamma_t * torch.autograd.grad(x_hat, x_t, v, retain_graph=True)[0]

        def cov_y(v: Tensor) -> Tensor:
            return self.cov_y(v) + A(cov_x(At(v)))

        v = self.solve(A=cov_y, b=self.y - y_hat)
        step = gamma_t * torch.autograd.grad(y_hat, x_t, v)[0]
        return DiracPosterior(mean=x_hat + step)


# ---------------------------------------------------------------------------- observed
SAFEGUARDS = ("drop", "clip", "none")
"""Treatments of a non-positive eigenvalue of the observed covariance
(:class:`ObservedMMPSDenoiser`): ``"drop"`` (default) no update in that direction,
``"clip"`` the eigenvalue set to zero but the direction kept, ``"none"`` no safeguard."""


class _Whitening:
    r""":math:`x \mapsto L^{-1} x` and :math:`x \mapsto L^{-\top} x` for
    :math:`\Sigma_y = L L^\top`, row-wise on ``(N, M)`` in float64: elementwise for isotropic and
    diagonal azula covariances (no ``M × M`` matrix for large ``M``), by a Cholesky factor
    otherwise (a dense tensor, or any azula covariance through its dense matrix)."""

    def __init__(self, cov_y: Tensor | Covariance, M: int) -> None:
        self.scale: Tensor | None = None
        self.chol: Tensor | None = None
        if isinstance(cov_y, IsotropicCovariance):
            diag = torch.as_tensor(cov_y.lmbda, dtype=torch.float64).reshape(()).expand(M)
        elif isinstance(cov_y, DiagonalCovariance):
            diag = cov_y.D.to(torch.float64).flatten()
        else:
            if not torch.is_tensor(cov_y):
                from ..observations import noise_matrix

                cov_y = noise_matrix(cov_y, M)
            if cov_y.shape != (M, M):
                raise ValueError(f"cov_y must be ({M}, {M}), got {tuple(cov_y.shape)}")
            dense = cov_y.to(torch.float64)
            chol, info = torch.linalg.cholesky_ex(0.5 * (dense + dense.T))
            if int(info) != 0 or not bool(torch.isfinite(chol).all()):
                raise ValueError("cov_y must be symmetric positive definite")
            self.chol = chol
            return
        if diag.shape != (M,):
            raise ValueError(f"cov_y must have {M} diagonal values, got {tuple(diag.shape)}")
        if not bool((diag > 0).all() and torch.isfinite(diag).all()):
            raise ValueError("cov_y must be positive definite (positive finite variances)")
        self.scale = diag.sqrt()

    def _lower(self, x: Tensor, transpose: bool) -> Tensor:
        if self.scale is not None:
            return x / self.scale.to(x.device)
        L = self.chol.to(x.device)
        L = L.T if transpose else L
        return torch.linalg.solve_triangular(L, x.unsqueeze(-1), upper=transpose).squeeze(-1)

    def white(self, x: Tensor) -> Tensor:
        """:math:`L^{-1} x`."""
        return self._lower(x, False)

    def white_t(self, x: Tensor) -> Tensor:
        """:math:`L^{-\\top} x`."""
        return self._lower(x, True)


def observed_filter(eigenvalues: Tensor, safeguard: str = "drop") -> Tensor:
    r"""The spectral filter :math:`g(\lambda)` of :class:`ObservedMMPSDenoiser`: the whitened
    solve :math:`(I + S)^{-1}` acts as :math:`1/(1 + \lambda)` on an eigenvector of :math:`S`
    with eigenvalue :math:`\lambda`; a non-positive :math:`\lambda` gets ``0`` (``"drop"``),
    ``1`` (``"clip"``: :math:`\lambda` set to zero) or :math:`1/(1 + \lambda)` (``"none"``)."""
    inv = 1.0 / (1.0 + eigenvalues)
    if safeguard == "none":
        return inv
    positive = eigenvalues > 0
    fallback = 0.0 if safeguard == "drop" else 1.0
    return torch.where(positive, inv, torch.full_like(inv, fallback))


class ObservedMMPSDenoiser(_GuidedDenoiser):
    r"""MMPS guidance with the Tweedie covariance projected in *observation space*:
    matrix-free (vector–Jacobian products only) and safe against the negative directions of
    a learned denoiser's covariance (docs/method.md#observation-space-projection).

    With :math:`C = (\sigma_t^2/\alpha_t) J`, :math:`J = \partial \hat x / \partial x_t`,
    :math:`\Sigma_y = L L^\top`, the guidance needs only the cross-covariance
    :math:`B = C^\top H^\top L^{-\top}` (``D × M``, one VJP of the denoiser per column) and the
    whitened observed covariance :math:`S = L^{-1} H C^\top H^\top L^{-\top} = L^{-1} H B`
    (``M × M``).  Let :math:`\tfrac12 (S + S^\top) = U \Lambda U^\top`.  The guided denoiser is

    .. math::
        \mathbb{E}[x \mid x_t, y] \approx \hat x + B\, U g(\Lambda) U^\top L^{-1}
            (y - H(\hat x)), \qquad
        g(\lambda) = \frac{\mathbb{1}[\lambda > 0]}{1 + \lambda} .

    When :math:`J` is symmetric PSD this is exact MMPS, :math:`\hat x + C H^\top
    (\Sigma_y + H C H^\top)^{-1} (y - H(\hat x))` (a direction with :math:`\lambda = 0` has
    :math:`B u = 0`).  Otherwise it is MMPS with the PSD covariance
    :math:`\tilde C = B\, U_+ \Lambda_+^{-1} U_+^\top B^\top` (a Nyström approximation,
    Drineas & Mahoney 2005, from the sketch :math:`H^\top L^{-\top}`, restricted to the
    positive eigenvalues; exactly so when :math:`S` is symmetric, otherwise with :math:`S`
    replaced by its symmetric part): for a PSD covariance, zero variance of an observed direction
    forces zero cross-covariance with it, so a direction in which :math:`S` is not positive
    gets no update rather than the exploding :math:`1/(1 + \lambda)` of the raw solve.
    The step is bounded, :math:`\lVert \text{step} \rVert \le \lVert B \rVert
    \lVert L^{-1} r \rVert`.

    ``rank=None`` forms :math:`S` column by column (``M`` VJPs) and is exact in observation
    space.  ``rank=k`` is the matrix-free fallback for large ``M``: :math:`k` products with
    :math:`S` build an orthonormal basis :math:`Q_k` of the Krylov space
    :math:`\mathcal{K}_k(S, L^{-1} r)` (Arnoldi with full re-orthogonalisation) and the same
    filter is applied to the Rayleigh–Ritz matrix :math:`\tfrac12 Q_k^\top (S + S^\top) Q_k`
    (a Galerkin solve whose Ritz values are clipped: the positivity safeguard inside the
    Krylov solve, in the spirit of Steihaug's (1983) truncated CG, which stops at a direction
    of non-positive curvature).  For a symmetric PSD :math:`S` it is exactly ``k`` CG
    iterations on the whitened system; with ``k = M`` it is the ``rank=None`` result.

    Cost per call: one forward and ``M + 1`` (``rank=None``) or ``k + 1`` backward passes of
    the denoiser (the last one maps the solution back), plus VJPs and JVPs of ``A``;
    memory :math:`O(N (M k + D))` with :math:`k = M` for ``rank=None``.

    Arguments:
        denoiser: The unguided denoiser on states ``(N, *S)``.
        y: The observation ``(M,)`` (no missing values).
        A: The observation map on the denoiser's variable, ``(N, *S) -> (N, M)``.
        cov_y: :math:`\Sigma_y`: a dense ``(M, M)`` tensor or an azula covariance (isotropic
            and diagonal ones are whitened elementwise).
        rank: ``None`` (exact in observation space) or the Krylov dimension ``k >= 1``
            (``min(k, M)`` products).
        safeguard: ``"drop"`` (default), ``"clip"`` or ``"none"`` (:func:`observed_filter`;
            the last two are ablations).
        A_lin: The linear part of ``A`` when ``A`` is affine; its products replace the
            forward-mode JVPs of ``A`` (``None``: JVPs).
    """

    def __init__(
        self,
        denoiser: Denoiser,
        y: Tensor,
        A: Callable[[Tensor], Tensor],
        cov_y: Tensor | Covariance,
        rank: int | None = None,
        safeguard: str = "drop",
        A_lin: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        if rank is not None and (
            isinstance(rank, bool) or not isinstance(rank, int) or int(rank) < 1
        ):
            raise ValueError(f"rank must be an integer >= 1 or None, got {rank!r}")
        if safeguard not in SAFEGUARDS:
            raise ValueError(f"safeguard must be one of {list(SAFEGUARDS)}, got {safeguard!r}")
        self.denoiser, self.y, self.A = denoiser, y, A
        self.whitening = _Whitening(cov_y, y.shape[-1])
        self.rank, self.safeguard = rank, safeguard
        self.A_lin = A_lin

    @torch.no_grad()
    def forward(self, x_t: Tensor, t: Tensor, **kwargs) -> DiracPosterior:
        gamma_t, x_in, x_hat, y_hat = self._tweedie(x_t, t, kwargs)
        W = self.whitening
        f64 = torch.float64
        r = W.white((self.y.to(y_hat) - y_hat.detach()).to(f64))  # (N, M)
        N, M = r.shape

        def S(q: Tensor) -> Tensor:
            """Whitened observed covariance times ``q (N, M)``: one VJP of the denoiser."""
            (a,) = torch.autograd.grad(y_hat, x_hat, W.white_t(q).to(y_hat), retain_graph=True)
            (b,) = torch.autograd.grad(x_hat, x_in, a, retain_graph=True)
            s = self._jvp_A(x_hat, gamma_t * b)
            return W.white(s.to(f64))

        if self.rank is None:
            eye = torch.eye(M, dtype=f64, device=r.device)
            cols = [S(eye[m].expand(N, M)) for m in range(M)]
            Q = eye.expand(N, M, M)
            SQ = torch.stack(cols, dim=-1) if cols else r.new_zeros(N, M, 0)
        else:
            Q, SQ = _arnoldi(S, r, min(self.rank, M))
        T = Q.transpose(1, 2) @ SQ
        lam, U = torch.linalg.eigh(0.5 * (T + T.transpose(1, 2)))
        c = U.transpose(1, 2) @ (Q.transpose(1, 2) @ r.unsqueeze(-1))
        v = Q @ (U @ (observed_filter(lam, self.safeguard).unsqueeze(-1) * c))
        v = W.white_t(v.squeeze(-1))
        (g,) = torch.autograd.grad(y_hat, x_in, v.to(y_hat))
        return DiracPosterior(mean=x_hat.detach() + gamma_t * g)


def _arnoldi(S: Callable[[Tensor], Tensor], r: Tensor, k: int) -> tuple[Tensor, Tensor]:
    r"""An orthonormal basis ``Q (N, M, k)`` of the Krylov space :math:`\mathcal{K}_k(S, r)`
    (Arnoldi with classical Gram–Schmidt applied twice) and ``S Q`` ``(N, M, k)``, batched over
    rows; exactly ``k`` products with ``S``.  After a breakdown (the space is invariant, or
    ``r = 0``) the remaining basis vectors are zero, which the caller's filter ignores."""
    tiny = torch.finfo(r.dtype).tiny

    def unit(u: Tensor, ref: Tensor) -> Tensor:
        n = torch.linalg.vector_norm(u, dim=-1, keepdim=True)
        ok = n > 1e-12 * ref + tiny
        return torch.where(ok, u / torch.where(ok, n, torch.ones_like(n)), torch.zeros_like(u))

    q = unit(r, torch.linalg.vector_norm(r, dim=-1, keepdim=True))
    Qs, Ws = [], []
    for j in range(k):
        w = S(q)
        Qs.append(q)
        Ws.append(w)
        if j == k - 1:
            break
        Qm = torch.stack(Qs, dim=-1)
        h = w
        for _ in range(2):
            h = h - (Qm @ (Qm.transpose(1, 2) @ h.unsqueeze(-1))).squeeze(-1)
        q = unit(h, torch.linalg.vector_norm(w, dim=-1, keepdim=True))
    return torch.stack(Qs, dim=-1), torch.stack(Ws, dim=-1)


# ---------------------------------------------------------------------------- DPS
DPS_LIKELIHOOD = "likelihood"


def check_dps_scale(value) -> float | str:
    """``"likelihood"``, or a positive finite number as a float; anything else is a
    ``ValueError`` naming ``dps_scale``."""
    if isinstance(value, str) and value == DPS_LIKELIHOOD:
        return DPS_LIKELIHOOD
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not (ok and math.isfinite(value) and value > 0):
        raise ValueError(
            f"dps_scale must be a positive finite number or 'likelihood', got {value!r}"
        )
    return float(value)


class DPSDenoiser(_GuidedDenoiser):
    r"""Diffusion posterior sampling (DPS; Chung et al. 2023) as a guided denoiser
    (docs/method.md#dps-guidance):

    .. math::
        \mathbb{E}[x \mid x_t, y] \approx \hat x + \frac{\sigma_t^2}{\alpha_t}\, \zeta_t\,
            \nabla_{x_t} \log \mathcal{N}\big(y;\, H(\hat x(x_t)),\, \Sigma_y\big), \qquad
        \nabla_{x_t} \log \mathcal{N} = J_t^\top H_{\hat x}^\top \Sigma_y^{-1} (y - H(\hat x)),

    with :math:`J_t = \partial \hat x / \partial x_t`: one forward and one backward pass of
    the denoiser per call, no linear solve.

    Derivation.  For :math:`x_t = \alpha_t x + \sigma_t z`, Tweedie's formula gives the score
    :math:`\nabla \log p(x_t) = (\alpha_t \hat x - x_t)/\sigma_t^2`.  Adding a likelihood
    score :math:`g_t \approx \nabla_{x_t} \log p(y \mid x_t)` to it is the same as replacing
    :math:`\hat x` by :math:`\hat x + (\sigma_t^2/\alpha_t)\, g_t`, so a guided denoiser turns
    every sampler into a sampler of the guided score.  DPS takes
    :math:`p(y \mid x_t) \approx \mathcal{N}(y; H(\hat x), \Sigma_y)` (the posterior
    :math:`p(x \mid x_t)` replaced by a point mass at :math:`\hat x`; MMPS adds
    :math:`H C_t H^\top` to :math:`\Sigma_y`), whose score is :math:`g_t = -\tfrac12
    \nabla \lVert r \rVert^2_{\Sigma_y} = -\lVert r \rVert_{\Sigma_y} \nabla \lVert r
    \rVert_{\Sigma_y}` with :math:`r = y - H(\hat x)`, :math:`\lVert r \rVert_{\Sigma_y}^2 =
    r^\top \Sigma_y^{-1} r`.

    * ``scale="likelihood"``: :math:`\zeta_t = 1`, the guided score is exactly the prior score
      plus the score of :math:`\mathcal{N}(y; H(\hat x), \Sigma_y)` (Chung et al.'s
      approximation taken literally, without their empirical step size); on a
      linear-Gaussian model the probability-flow ODE is then linear and the law it samples
      has a closed form, which is not the posterior (tests/emulators/test_dps_bicgstab.py).
    * ``scale=ζ'`` (a positive number): Chung et al.'s step-size rule (their Algorithm 1,
      :math:`\zeta_i = \zeta' / \lVert y - H(\hat x) \rVert`) on the whitened residual,
      :math:`\zeta_t = \zeta' / \lVert r \rVert_{\Sigma_y}`, i.e. the score correction
      :math:`-\zeta' \nabla \lVert r \rVert_{\Sigma_y}`, of a size that does not grow with the
      residual.  Chung et al. subtract :math:`\zeta_i \nabla \lVert r \rVert^2` from the
      iterate of a 1000-step DDPM; genfilter applies the correction to the score (through
      :math:`\sigma_t^2/\alpha_t`), so that :math:`\zeta'` means the same for every sampler
      and step count.  :math:`\zeta' = \lVert r \rVert_{\Sigma_y}` gives back ``"likelihood"``.

    Arguments:
        denoiser: The unguided denoiser.
        y: The observation ``(M,)`` (no missing values).
        A: The observation map on the denoiser's variable, ``(N, *S) -> (N, M)``.
        cov_y: The noise covariance :math:`\Sigma_y` (an azula covariance with ``.inv``).
        scale: :math:`\zeta' > 0` (default 1) or ``"likelihood"``.
    """

    def __init__(
        self,
        denoiser: Denoiser,
        y: Tensor,
        A: Callable[[Tensor], Tensor],
        cov_y: Covariance,
        scale: float | str = 1.0,
    ) -> None:
        super().__init__()
        self.denoiser, self.y, self.A, self.cov_y = denoiser, y, A, cov_y
        self.scale = check_dps_scale(scale)

    @torch.no_grad()
    def forward(self, x_t: Tensor, t: Tensor, **kwargs) -> DiracPosterior:
        gamma_t, x_in, x_hat, y_hat = self._tweedie(x_t, t, kwargs)
        r = (self.y - y_hat).detach()
        w = self.cov_y.inv(r)  # Σ_y⁻¹ r
        (g,) = torch.autograd.grad(y_hat, x_in, w)  # ∇_{x_t} log N(y; H(x̂), Σ_y)
        if self.scale == DPS_LIKELIHOOD:
            step = gamma_t * g
        else:
            # ζ'/‖r‖ in float64; a zero residual has a zero gradient, hence a zero step
            rr = torch.einsum("...i,...i", r, w).to(torch.float64)
            zeta = torch.where(rr > 0, self.scale / torch.sqrt(rr.clamp_min(1e-300)), 0.0)
            zeta = zeta.reshape(-1, *([1] * (g.ndim - 1)))
            step = (gamma_t * zeta * g.to(torch.float64)).to(g.dtype)
        return DiracPosterior(mean=x_hat.detach() + step)
