r"""The weighting core shared by the particle filters: weights → evidence → ESS-targeted
inflation → normalised weights (docs/method.md#fa-apf-weights, #inflation).

Given prior log-weights :math:`\log \pi_i` and per-particle log-likelihoods
:math:`\ell_i = \log \hat p(y \mid x_i)`,

- the evidence increment is :math:`\log \sum_i \pi_i e^{\ell_i}` (with the un-inflated
  likelihood, whatever the inflation);
- with an ESS interval :math:`[N_{\min}, N_{\max}]` the weights are
  :math:`\log w_i \propto \log \pi_i + \beta \ell_i` with :math:`\beta \le 1` found by
  bisection (:func:`~genfilter.filters.tempering.find_inflation`); without one,
  :math:`\beta = 1`.

The fully adapted APF (:class:`~genfilter.filters.fa_apf.FAAPF`) and the bootstrap PF
(:class:`~genfilter.filters.bpf.BootstrapPF`) both call :func:`reweight`, so the checks
(NaN and :math:`\pm\infty` log-likelihoods, no compatible particle) and the inflation rule
are written once.

References:
    | Particle filters with adaptive tempering to an ESS target (Jasra, Stephens, Doucet
      & Tsagaris 2011, "Inference for Lévy-driven stochastic volatility models via adaptive
      sequential Monte Carlo", Scand. J. Stat.).
    | Training-Free Bayesian Filtering with Generative Emulators (Savary, Rozet & Louppe,
      ICML 2026), Algorithm 1.
"""

from __future__ import annotations

__all__ = ["Reweighting", "WeightCollapseWarning", "check_ess_interval", "reweight"]

from dataclasses import dataclass

import torch
from torch import Tensor

from .tempering import ess as effective_sample_size
from .tempering import find_inflation


class WeightCollapseWarning(UserWarning):
    """The ESS target could not be met even at the smallest inflation: the weights have
    collapsed onto few particles (warned once per run by
    :func:`~genfilter.filters.base.assimilate`; every such step has ``target_met = 0``)."""


def check_ess_interval(ess_interval, name: str = "ess_interval") -> tuple[float, float] | None:
    """Validates ``(N_min, N_max)`` given as fractions of N, ``0 < N_min <= N_max <= 1``;
    ``None`` (no inflation) passes through."""
    if ess_interval is None:
        return None
    try:
        lo, hi = (float(v) for v in ess_interval)
    except (TypeError, ValueError):
        raise ValueError(
            f"{name} must be a pair (N_min, N_max) of fractions of N, got {ess_interval!r}"
        ) from None
    if not (0.0 < lo <= hi <= 1.0):
        raise ValueError(
            f"{name} must be fractions 0 < N_min <= N_max <= 1 of N, got {ess_interval!r}"
        )
    return lo, hi


@dataclass(frozen=True)
class Reweighting:
    """What :func:`reweight` returns.

    Attributes:
        log_weights: Normalised log-weights ``(N,)``, float64.
        log_evidence: :math:`\\log \\sum_i \\pi_i \\hat p(y \\mid x_i)` (un-inflated).
        inflation: The inflation β (1.0: none).
        ess: ESS of ``log_weights``.
        ess_untempered: ESS of the un-inflated weights (β = 1).
        target_met: Whether the ESS lies in the interval (``None`` without an interval).
        bisection_iterations: Bisection steps of the inflation search.
    """

    log_weights: Tensor
    log_evidence: float
    inflation: float
    ess: float
    ess_untempered: float
    target_met: bool | None
    bisection_iterations: int

    def diagnostics(self) -> dict:
        """The :class:`~genfilter.filters.base.StepInfo` fields this weighting fills."""
        return {
            "ess": self.ess,
            "inflation": self.inflation,
            "log_evidence": self.log_evidence,
            "ess_untempered": self.ess_untempered,
            "target_met": self.target_met,
            "bisection_iterations": self.bisection_iterations,
        }


def reweight(
    prior_log_weights: Tensor,
    log_likelihoods: Tensor,
    ess_interval: tuple[float, float] | None,
    *,
    who: str,
) -> Reweighting:
    r"""Weights particles by their log-likelihoods, inflating to the ESS interval.

    Arguments:
        prior_log_weights: :math:`\log \pi_i` ``(N,)`` (normalised or not).
        log_likelihoods: :math:`\ell_i` ``(N,)``; ``-inf`` gives a particle zero weight.
        ess_interval: ``(N_min, N_max)`` as fractions of ``N`` (each bound at least one
            particle), or ``None`` for β = 1.
        who: The filter's name, for error messages.

    Raises:
        FloatingPointError: a log-likelihood is NaN or ``+inf`` (non-finite particles or
            predictions upstream).
        ValueError: no particle is compatible with the observation (all ``-inf``).
    """
    # the weights are N numbers: they stay where the prior weights are (the CPU for the
    # filters' ensembles), whatever device computed the log-likelihoods
    ll = log_likelihoods.double().to(prior_log_weights.device)
    prior = prior_log_weights.double()
    bad = torch.isnan(ll) | torch.isposinf(ll)
    if bool(bad.any()):
        idx = bad.nonzero().flatten()
        raise FloatingPointError(
            f"{who}: log-likelihoods are NaN or +inf for {idx.numel()} particle(s) (first "
            f"{idx[:5].tolist()}): the predicted states are not finite"
        )
    if bool(torch.isneginf(ll).all()):
        raise ValueError(
            f"{who}: all log-likelihoods are -inf: no particle is compatible with the observation"
        )
    log_evidence = float(torch.logsumexp(prior + ll, 0))
    if ess_interval is None:
        lw = prior + ll
        lw = lw - torch.logsumexp(lw, 0)
        ess = effective_sample_size(lw)
        return Reweighting(lw, log_evidence, 1.0, ess, ess, None, 0)
    N = ll.shape[0]
    res = find_inflation(
        ll, max(1.0, ess_interval[0] * N), max(1.0, ess_interval[1] * N), prior_log_weights=prior
    )
    return Reweighting(
        res.log_weights,
        log_evidence,
        res.beta,
        effective_sample_size(res.log_weights),
        res.ess_untempered,
        bool(res.converged),
        res.iterations,
    )
