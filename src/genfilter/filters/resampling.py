r"""Resampling schemes (step 4 of FA-APF and the bootstrap filter's resampling;
docs/method.md#resampling).

Every scheme is a plain function with one signature, as in N. Chopin's ``particles``:

.. code-block:: python

    ancestors = scheme(weights, M=None, generator=None)

with ``weights`` the normalised weights :math:`w` ``(N,)`` and ``ancestors`` the indices
:math:`a_1 \le \dots \le a_M` ``(M,)`` (``int64``, sorted, on the device of ``weights``).
Every scheme is unbiased: the offspring count :math:`O_i = \#\{m : a_m = i\}` satisfies
:math:`E[O_i] = M w_i`. They differ in the variance of :math:`O_i`:

* ``systematic`` — one uniform :math:`U \sim \mathcal{U}[0, 1)`, points
  :math:`u_m = (U + m) / M`. :math:`O_i \in \{\lfloor M w_i \rfloor, \lceil M w_i \rceil\}`
  (Kitagawa 1996; Carpenter, Clifford & Fearnhead 1999). The default.
* ``stratified`` — one independent uniform per stratum, :math:`u_m = (U_m + m) / M`
  (Kitagawa 1996).
* ``residual`` — :math:`\lfloor M w_i \rfloor` deterministic copies, the remaining
  :math:`R = M - \sum_i \lfloor M w_i \rfloor` drawn by *multinomial* resampling on the
  residual weights :math:`M w_i - \lfloor M w_i \rfloor` (Liu & Chen 1998).
* ``multinomial`` — :math:`a_m` i.i.d. :math:`\mathrm{Categorical}(w)`, drawn as the
  inverse CDF of sorted uniforms; :math:`\mathrm{Var}[O_i] = M w_i (1 - w_i)`.

All schemes invert the CDF :math:`C_j = \sum_{l \le j} w_l` at points :math:`u \in [0, 1)`:
:math:`a = \min\{j : C_j > u\}`. The strict inequality (``searchsorted(..., right=True)``)
never selects a particle of zero weight (not even at :math:`u = 0`), the CDF is exactly 1
from the last particle of positive weight on and the points are clamped below 1, so that
floating-point error never yields the index ``N``.

Randomness enters only through ``generator`` (a ``torch.Generator``); with ``None`` the
default generator of the device is used, as in every ``torch`` sampling function.

:func:`resample` is the entry point from log-weights: it normalises them in float64 with
``logsumexp`` (never exponentiating unshifted values), validates them and dispatches to a
scheme by name.

References:
    | Monte Carlo Filter and Smoother for Non-Gaussian Nonlinear State Space Models
    | (Kitagawa, 1996), Journal of Computational and Graphical Statistics 5, 1-25

    | Improved Particle Filter for Nonlinear Problems (Carpenter, Clifford & Fearnhead, 1999)
    | IEE Proceedings - Radar, Sonar and Navigation 146, 2-7

    | Sequential Monte Carlo Methods for Dynamic Systems (Liu & Chen, 1998)
    | Journal of the American Statistical Association 93, 1032-1044

    | Comparison of Resampling Schemes for Particle Filtering (Douc, Cappé & Moulines, 2005)
    | ISPA 2005, 64-69
"""

from __future__ import annotations

__all__ = ["systematic", "stratified", "residual", "multinomial", "resample", "SCHEMES"]

import math
import operator
from collections.abc import Callable

import torch
from torch import Tensor

# Largest float64 strictly below 1: uniforms are clamped to it so that u < C_N = 1 always.
_ONE_MINUS = math.nextafter(1.0, 0.0)


def _check_M(M: int | None, N: int) -> int:
    if M is None:
        return N
    if isinstance(M, bool):
        raise TypeError(f"M must be an integer, got {M!r}")
    try:
        M = operator.index(M)
    except TypeError:
        raise TypeError(f"M must be an integer, got {type(M).__name__} {M!r}") from None
    if M < 1:
        raise ValueError(f"M (number of ancestors to draw) must be >= 1, got {M}")
    return M


def _check_weights(weights: Tensor) -> Tensor:
    """Validates weights ``(N,)`` and returns them renormalised, in float64."""
    if not torch.is_tensor(weights):
        raise TypeError(f"weights must be a torch.Tensor, got {type(weights).__name__}")
    if weights.ndim != 1:
        raise ValueError(f"weights must have shape (N,), got {tuple(weights.shape)}")
    if weights.numel() == 0:
        raise ValueError("weights is empty: there is no particle to resample")
    w = weights.to(torch.float64)
    if bool(torch.isnan(w).any()):
        bad = torch.isnan(w).nonzero().flatten()
        raise ValueError(f"weights contains NaN at indices {bad[:5].tolist()}")
    if bool(torch.isinf(w).any()):
        bad = torch.isinf(w).nonzero().flatten()
        raise ValueError(f"weights contains inf at indices {bad[:5].tolist()}")
    if bool((w < 0).any()):
        bad = (w < 0).nonzero().flatten()
        raise ValueError(
            f"weights must be non-negative, got {w[bad[0]].item()!r} at index {bad[0].item()} "
            f"({bad.numel()} negative entries)"
        )
    total = w.sum()
    if not bool(total > 0):
        raise ValueError("weights are all zero: no particle has positive weight")
    return w / total


def _uniforms(M: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """``(M,)`` i.i.d. U[0, 1) float64 on ``device``, drawn only from ``generator``."""
    gen_device = generator.device if generator is not None else device
    u = torch.rand(M, dtype=torch.float64, device=gen_device, generator=generator)
    return u.to(device)


def _inverse_cdf(u: Tensor, w: Tensor) -> Tensor:
    r"""Ancestors :math:`a_m = \min\{j : C_j > u_m\}` for points ``u`` ``(M,)`` in [0, 1).

    ``w`` ``(N,)`` float64, non-negative, positive sum. Sorted ``u`` give sorted ancestors.
    """
    cdf = torch.cumsum(w, 0)
    # Dividing by C_N makes the CDF exactly 1 from the last particle of positive weight on
    # (adding zero weights leaves the cumulative sum unchanged and x / x == 1 in IEEE), so
    # float error can select neither a trailing zero-weight particle nor the index N.
    cdf = cdf / cdf[-1]
    # (U + M - 1) / M can round up to 1.0; keep every point strictly below C_N = 1.
    u = u.clamp(0.0, _ONE_MINUS)
    return torch.searchsorted(cdf, u.contiguous(), right=True)


def systematic(
    weights: Tensor, M: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    r"""Systematic resampling: :math:`u_m = (U + m) / M`, :math:`U \sim \mathcal{U}[0, 1)`.

    Each offspring count is :math:`\lfloor M w_i \rfloor` or :math:`\lceil M w_i \rceil`.

    Arguments:
        weights: Normalised non-negative weights ``(N,)`` (renormalised here).
        M: Number of ancestors (default ``N``).
        generator: Source of randomness.

    Returns:
        Sorted ancestor indices ``(M,)``, ``int64``.
    """
    w = _check_weights(weights)
    M = _check_M(M, w.shape[0])
    U = _uniforms(1, generator, w.device)
    u = (U + torch.arange(M, dtype=torch.float64, device=w.device)) / M
    return _inverse_cdf(u, w)


def stratified(
    weights: Tensor, M: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    r"""Stratified resampling: :math:`u_m = (U_m + m) / M`, :math:`U_m` i.i.d.
    :math:`\mathcal{U}[0, 1)`.

    Arguments and returns as :func:`systematic`.
    """
    w = _check_weights(weights)
    M = _check_M(M, w.shape[0])
    U = _uniforms(M, generator, w.device)
    u = (U + torch.arange(M, dtype=torch.float64, device=w.device)) / M
    return _inverse_cdf(u, w)


def multinomial(
    weights: Tensor, M: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    r"""Multinomial resampling: :math:`a_m` i.i.d. :math:`\mathrm{Categorical}(w)`.

    Drawn as the inverse CDF of sorted uniforms (their order statistics), so the ancestors
    come out sorted. Arguments and returns as :func:`systematic`.
    """
    w = _check_weights(weights)
    M = _check_M(M, w.shape[0])
    u = torch.sort(_uniforms(M, generator, w.device)).values
    return _inverse_cdf(u, w)


def residual(
    weights: Tensor, M: int | None = None, generator: torch.Generator | None = None
) -> Tensor:
    r"""Residual resampling: :math:`\lfloor M w_i \rfloor` copies of particle :math:`i`,
    then :math:`R = M - \sum_i \lfloor M w_i \rfloor` ancestors by **multinomial**
    resampling on the residual weights :math:`M w_i - \lfloor M w_i \rfloor` (Liu & Chen
    1998).

    :math:`M w_i` is floored with a tolerance of ``1e-9`` so that float error (e.g.
    ``49 * (1/49) < 1``) does not lose a deterministic copy; this biases a count by at most
    that tolerance. Arguments and returns as :func:`systematic`.
    """
    w = _check_weights(weights)
    N = w.shape[0]
    M = _check_M(M, N)
    Mw = M * w
    copies = torch.floor(Mw + 1e-9)
    if int(copies.sum()) > M:  # only possible if the tolerance met many near-integers
        copies = torch.floor(Mw)
    copies = copies.to(torch.int64)
    R = M - int(copies.sum())
    ancestors = torch.repeat_interleave(torch.arange(N, device=w.device), copies)
    if R > 0:
        rest = (Mw - copies.to(torch.float64)).clamp_min(0.0)
        if not bool(rest.sum() > 0):  # R >= 1 copies are missing but every residual is 0
            rest = w
        u = torch.sort(_uniforms(R, generator, w.device)).values
        ancestors = torch.cat([ancestors, _inverse_cdf(u, rest / rest.sum())])
        ancestors = torch.sort(ancestors).values
    return ancestors


SCHEMES: dict[str, Callable[..., Tensor]] = {
    "systematic": systematic,
    "stratified": stratified,
    "residual": residual,
    "multinomial": multinomial,
}


def _normalise_log_weights(log_weights: Tensor) -> Tensor:
    """Validates log-weights ``(N,)`` and returns the normalised weights in float64."""
    if not torch.is_tensor(log_weights):
        raise TypeError(f"log_weights must be a torch.Tensor, got {type(log_weights).__name__}")
    if log_weights.ndim != 1:
        raise ValueError(f"log_weights must have shape (N,), got {tuple(log_weights.shape)}")
    if log_weights.numel() == 0:
        raise ValueError("log_weights is empty: there is no particle to resample")
    lw = log_weights.to(torch.float64)
    if bool(torch.isnan(lw).any()):
        bad = torch.isnan(lw).nonzero().flatten()
        raise ValueError(f"log_weights contains NaN at indices {bad[:5].tolist()}")
    if bool((lw == math.inf).any()):
        bad = (lw == math.inf).nonzero().flatten()
        raise ValueError(f"log_weights contains +inf at indices {bad[:5].tolist()}")
    if not bool(torch.isfinite(lw).any()):
        raise ValueError(
            "log_weights are all -inf: no particle has positive weight (no particle is "
            "compatible with the observation); refusing to resample"
        )
    return torch.exp(lw - torch.logsumexp(lw, 0))


def resample(
    log_weights: Tensor,
    scheme: str = "systematic",
    M: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Draws ancestors from (possibly unnormalised) log-weights.

    :math:`w_i = \exp(\log w_i - \mathrm{logsumexp}_j \log w_j)` in float64, then
    ``SCHEMES[scheme](w, M, generator)``. Entries ``-inf`` (zero weight) are allowed; NaN,
    ``+inf`` or all ``-inf`` raise ``ValueError`` (never a silent fall-back to uniform
    weights).

    Arguments:
        log_weights: Log-weights ``(N,)``.
        scheme: One of ``"systematic"`` (default), ``"stratified"``, ``"residual"``,
            ``"multinomial"``.
        M: Number of ancestors (default ``N``).
        generator: Source of randomness.

    Returns:
        Sorted ancestor indices ``(M,)``, ``int64``, on the device of ``log_weights``.
    """
    if scheme not in SCHEMES:
        raise ValueError(
            f"unknown resampling scheme {scheme!r}; valid schemes: {', '.join(SCHEMES)}"
        )
    w = _normalise_log_weights(log_weights)
    return SCHEMES[scheme](w, M, generator)
