r"""Effective sample size and ESS-targeted likelihood inflation (step 3 of the FA-APF of
Savary, Rozet & Louppe 2026, §3.1; docs/method.md#inflation).

Tempered (inflated) log-weights, for :math:`\beta \in (0, 1]`,

.. math:: \log w_i(\beta) = \log \pi_i + \beta \, \ell_i ,

with :math:`\ell_i` the log-likelihoods and :math:`\pi_i` optional prior weights (uniform in
FA-APF, whose particles are equally weighted after each step). For the Gaussian "Dirac"
weights (paper Eq. 23–26; docs/method.md#fa-apf-weights), :math:`\ell_i = -m_i / 2` and
:math:`\beta \ell_i` is the log-likelihood with :math:`\Sigma_y` inflated to
:math:`\Sigma_y / \beta` (up to a constant that normalisation removes).

:func:`find_inflation` chooses :math:`\beta` such that
:math:`\mathrm{ESS}(\beta) = 1 / \sum_i w_i(\beta)^2 \in [N_{\min}, N_{\max}]`
(official GenCast run: :math:`N = 256`, :math:`[50, 60]`): :math:`\beta = 1` when
:math:`\mathrm{ESS}(1) \ge N_{\min}`, otherwise bisection on :math:`\log \beta` within
:math:`[\log \beta_{\min}, 0]`. This is adaptive tempering with an ESS target
(Jasra et al. 2011); only :math:`N` scalars are involved.

Why the bisection is sound. Let :math:`q_\beta \propto \pi e^{\beta \ell}` be the normalised
weights. Then :math:`\frac{d}{d\beta} \log (1/\mathrm{ESS}) = 2 (E_{r}[\ell] - E_{q_\beta}[\ell])`
with :math:`r \propto q_\beta^2`. For a **uniform** prior, :math:`r \propto e^{2\beta\ell}`
is :math:`q_\beta` exponentially tilted by :math:`\beta \ell`, and tilting by a non-negative
multiple of :math:`\ell` cannot lower the mean of :math:`\ell` (the derivative of the
tilted mean is a variance), so ESS is non-increasing in :math:`\beta` (also checked
numerically in the tests): if :math:`\mathrm{ESS}(\beta_{\min}) < N_{\min}`, no
:math:`\beta` reaches the target. For a **non-uniform** prior monotonicity fails: e.g.
:math:`\pi = (0.99, 0.01)`, :math:`\ell = (0, 50)` gives an ESS that rises from about 1 to 2
and falls back to 1 as :math:`\beta` grows (also in the tests). The bisection itself does not
need monotonicity: it keeps a bracket with
:math:`\mathrm{ESS}(\text{lo}) \ge N_{\min} > \mathrm{ESS}(\text{hi})`; ESS is continuous in
:math:`\beta`, so the bracket shrinks onto a crossing of :math:`N_{\min}` and a midpoint lands
in :math:`[N_{\min}, N_{\max}]` whenever :math:`N_{\max} > N_{\min}`. Only the initial
bracket needs care: with a non-uniform prior and :math:`\mathrm{ESS}(\beta_{\min}) < N_{\min}`,
a 64-point grid in :math:`\log \beta` is scanned for the largest grid :math:`\beta` with
:math:`\mathrm{ESS} \ge N_{\min}` (a narrower bump between grid points can be missed).
With a uniform prior the crossing is unique; otherwise it is one of possibly several.

References:
    | Training-Free Bayesian Filtering with Generative Emulators (Savary et al., 2026)
    | https://arxiv.org/abs/2605.20028

    | Inference for Lévy-Driven Stochastic Volatility Models via Adaptive Sequential Monte
    | Carlo (Jasra, Stephens, Doucet & Tsagaris, 2011), Scandinavian Journal of Statistics
    | 38, 1-22
"""

from __future__ import annotations

__all__ = ["ess", "find_inflation", "InflationResult"]

import math
from dataclasses import dataclass

import torch
from torch import Tensor

# Grid points of log beta scanned when a non-uniform prior makes ESS non-monotone and
# ESS(beta_min) < n_min (see find_inflation).
_SCAN_POINTS = 64


def _check_log_values(x: Tensor, name: str) -> Tensor:
    """Validates a ``(N,)`` tensor of log-values (no NaN, no +inf); returns it in float64."""
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 1:
        raise ValueError(f"{name} must have shape (N,), got {tuple(x.shape)}")
    if x.numel() == 0:
        raise ValueError(f"{name} is empty: there are no particles")
    x = x.to(torch.float64)
    if bool(torch.isnan(x).any()):
        bad = torch.isnan(x).nonzero().flatten()
        raise ValueError(
            f"{name} contains NaN at {bad.numel()} index(es), first {bad[:5].tolist()}"
        )
    if bool((x == math.inf).any()):
        bad = (x == math.inf).nonzero().flatten()
        raise ValueError(
            f"{name} contains +inf at {bad.numel()} index(es), first {bad[:5].tolist()}"
        )
    return x


def _normalise(log_weights: Tensor) -> Tensor:
    return log_weights - torch.logsumexp(log_weights, 0)


def _ess_normalised(log_weights: Tensor) -> float:
    # 1 / sum w_i^2 = exp(-logsumexp(2 log w_i)) for normalised log-weights.
    return float(torch.exp(-torch.logsumexp(2.0 * log_weights, 0)))


def ess(log_weights: Tensor) -> float:
    r"""Effective sample size :math:`1 / \sum_i w_i^2` of (possibly unnormalised)
    log-weights ``(N,)``, normalised in float64 with ``logsumexp``.

    ``-inf`` entries (zero weight) are allowed; NaN, ``+inf`` or all ``-inf`` raise
    ``ValueError``. The result lies in :math:`[1, N]`.
    """
    lw = _check_log_values(log_weights, "log_weights")
    if not bool(torch.isfinite(lw).any()):
        raise ValueError("log_weights are all -inf: no particle has positive weight")
    return _ess_normalised(_normalise(lw))


@dataclass(frozen=True)
class InflationResult:
    """What :func:`find_inflation` returns.

    Attributes:
        beta: The inflation :math:`\\beta \\in [\\beta_{\\min}, 1]` (``1.0``: none).
        ess: :math:`\\mathrm{ESS}(\\beta)`.
        ess_untempered: :math:`\\mathrm{ESS}(1)`.
        iterations: Number of bisection steps (``0`` when ``beta == 1`` or when even
            ``beta_min`` was not enough).
        log_weights: Normalised tempered log-weights ``(N,)``, float64 (``-inf`` for
            particles of zero weight).
        converged: ``False`` when the target was not met: even ``beta_min`` gives
            ``ess < n_min`` (then ``beta == beta_min``; with a non-uniform prior, the
            tried ``beta`` of largest ESS), or ``max_iter`` ran out (then ``beta`` is the
            bracket end with ``ess >= n_min``).
    """

    beta: float
    ess: float
    ess_untempered: float
    iterations: int
    log_weights: Tensor
    converged: bool = True


def find_inflation(
    log_likelihoods: Tensor,
    n_min: float,
    n_max: float,
    *,
    prior_log_weights: Tensor | None = None,
    beta_min: float = 1e-12,
    max_iter: int = 100,
) -> InflationResult:
    r"""Chooses the likelihood inflation :math:`\beta` by ESS bisection
    (docs/method.md#inflation).

    :math:`\log w_i(\beta) = \log \pi_i + \beta \ell_i`. If :math:`\mathrm{ESS}(1) \ge N_{\min}`
    (inside or above the interval) :math:`\beta = 1`. Otherwise bisect on :math:`\log \beta`
    in :math:`[\log \beta_{\min}, 0]` until :math:`\mathrm{ESS}(\beta) \in [N_{\min}, N_{\max}]`,
    at most ``max_iter`` steps. If even :math:`\beta_{\min}` gives
    :math:`\mathrm{ESS} < N_{\min}`, returns :math:`\beta_{\min}` with ``converged=False``
    (no error: the caller records it) — unless ``prior_log_weights`` is non-uniform, in which
    case ESS may be non-monotone and a log-grid is scanned first (module docstring).

    Arguments:
        log_likelihoods: :math:`\ell_i` ``(N,)``; ``-inf`` entries (particles incompatible
            with the observation) get zero weight.
        n_min, n_max: The ESS control interval, :math:`1 \le N_{\min} \le N_{\max} \le N`.
        prior_log_weights: :math:`\log \pi_i` ``(N,)``, possibly unnormalised (default
            uniform).
        beta_min: Smallest inflation, in :math:`(0, 1]`.
        max_iter: Maximum number of bisection steps.

    Returns:
        An :class:`InflationResult`.

    Raises:
        ValueError: NaN or ``+inf`` in ``log_likelihoods`` or ``prior_log_weights``; every
            particle has zero weight (all ``-inf``); shapes differ; an invalid interval,
            ``beta_min`` or ``max_iter``.
    """
    ll = _check_log_values(log_likelihoods, "log_likelihoods")
    N = ll.shape[0]
    if not bool(torch.isfinite(ll).any()):
        raise ValueError(
            f"log_likelihoods are all -inf (N = {N}): no particle is compatible with the "
            "observation; refusing to replace them by uniform weights"
        )
    if prior_log_weights is None:
        prior = torch.zeros_like(ll)
    else:
        if not torch.is_tensor(prior_log_weights) or prior_log_weights.shape != ll.shape:
            shape = (
                tuple(prior_log_weights.shape)
                if torch.is_tensor(prior_log_weights)
                else type(prior_log_weights).__name__
            )
            raise ValueError(
                f"prior_log_weights must have the shape of log_likelihoods {tuple(ll.shape)}, "
                f"got {shape}"
            )
        prior = _check_log_values(prior_log_weights, "prior_log_weights").to(ll.device)
        if not bool(torch.isfinite(prior).any()):
            raise ValueError("prior_log_weights are all -inf: no particle has positive weight")
        if not bool((torch.isfinite(prior) & torch.isfinite(ll)).any()):
            raise ValueError(
                "no particle of positive prior weight is compatible with the observation "
                "(prior_log_weights or log_likelihoods is -inf for every particle)"
            )

    n_min, n_max = float(n_min), float(n_max)
    if not (math.isfinite(n_min) and math.isfinite(n_max)):
        raise ValueError(f"n_min and n_max must be finite, got n_min={n_min}, n_max={n_max}")
    if n_min > n_max:
        raise ValueError(f"n_min must be <= n_max, got n_min={n_min} > n_max={n_max}")
    if n_min < 1:
        raise ValueError(f"n_min must be >= 1 (ESS is at least 1), got n_min={n_min}")
    if n_max > N:
        raise ValueError(f"n_max must be <= N = {N} (ESS is at most N), got n_max={n_max}")
    beta_min = float(beta_min)
    if not (0.0 < beta_min <= 1.0):
        raise ValueError(f"beta_min must lie in (0, 1], got beta_min={beta_min}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 0:
        raise ValueError(f"max_iter must be a non-negative integer, got max_iter={max_iter!r}")

    def tempered(beta: float) -> tuple[Tensor, float]:
        # beta > 0, so -inf log-likelihoods stay -inf (never 0 * -inf = NaN).
        lw = _normalise(prior + beta * ll)
        return lw, _ess_normalised(lw)

    lw1, ess1 = tempered(1.0)
    if ess1 >= n_min:
        return InflationResult(1.0, ess1, ess1, 0, lw1)

    # Bracket on log beta: ESS(lo) >= n_min > ESS(hi).
    lo, hi = math.log(beta_min), 0.0
    beta_lo = beta_min
    lw_lo, ess_lo = tempered(beta_min)
    if ess_lo < n_min:
        finite_prior = prior[torch.isfinite(prior)]
        if bool(finite_prior.max() == finite_prior.min()):
            # Uniform prior (on its support): ESS is non-increasing in beta, so no
            # beta >= beta_min reaches n_min and beta_min is the best one can do.
            return InflationResult(beta_min, ess_lo, ess1, 0, lw_lo, converged=False)
        # Non-uniform prior: ESS need not be monotone (module docstring), so a larger beta
        # may still reach n_min. Scan a log-grid for the largest such beta, bracket it with
        # the next grid point and bisect; if none, return the beta of largest ESS seen.
        best = (ess_lo, beta_min, lw_lo)
        found = False
        grid = torch.linspace(math.log(beta_min), 0.0, _SCAN_POINTS + 2, dtype=torch.float64)
        grid = grid[1:-1].tolist()
        for log_b in reversed(grid):
            lw_b, ess_b = tempered(math.exp(log_b))
            if ess_b >= n_min:
                lo, beta_lo, lw_lo, ess_lo = log_b, math.exp(log_b), lw_b, ess_b
                found = True
                break
            hi = log_b
            if ess_b > best[0]:
                best = (ess_b, math.exp(log_b), lw_b)
        if not found:
            return InflationResult(best[1], best[0], ess1, 0, best[2], converged=False)
        if ess_lo <= n_max:
            return InflationResult(beta_lo, ess_lo, ess1, 0, lw_lo)

    iterations = 0
    while iterations < max_iter:
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:  # the bracket is down to adjacent floats
            break
        iterations += 1
        beta = math.exp(mid)
        lw_mid, ess_mid = tempered(beta)
        if n_min <= ess_mid <= n_max:
            return InflationResult(beta, ess_mid, ess1, iterations, lw_mid)
        if ess_mid < n_min:
            hi = mid
        else:
            lo, beta_lo, lw_lo, ess_lo = mid, beta, lw_mid, ess_mid
    # Not met within max_iter (or n_max - n_min below float resolution): return the bracket
    # end with ESS >= n_min, the conservative side.
    converged = n_min <= ess_lo <= n_max
    return InflationResult(beta_lo, ess_lo, ess1, iterations, lw_lo, converged=converged)
