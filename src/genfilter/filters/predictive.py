r"""Posterior predictive check of a filter: is the next observation a plausible draw of the
filter's one-step predictive distribution? (docs/method.md#metrics)

Before the analysis of step :math:`k`, the filter's ensemble :math:`\{x_i^{k-1}, w_i\}`
defines the predictive :math:`p(y^k \mid y^{1:k-1}) \approx \sum_i w_i \int
\mathcal{N}(y^k; H(x), \Sigma_y)\, p(x \mid x_i^{k-1})\, dx`.  It is sampled by drawing
``samples`` ancestors by the weights, one transition each with the emulator's ``sample``,
and adding observation noise.  For each observed component :math:`j` the probability
integral transform :math:`\mathrm{PIT}_j = \hat F_j(y^k_j)` (the fraction of predictive
draws below the observation, ties split at random) is uniform on [0, 1] when the
predictive is calibrated; the central 50 % and 90 % intervals then contain the observation
50 % and 90 % of the time (Gneiting, Balabdaoui & Raftery 2007, "Probabilistic forecasts,
calibration and sharpness", JRSS B).

The draws use their own generator, so a run with the check has the same particles and
weights as a run without it.
"""

from __future__ import annotations

__all__ = ["predictive_pit", "coverage"]

import torch
from torch import Tensor

from ..observations import Observation


def predictive_pit(
    emulator,
    particles: Tensor,
    log_weights: Tensor,
    obs: Observation,
    generator: torch.Generator,
    samples: int = 256,
) -> Tensor:
    """PIT values ``(M,)`` of the observation ``obs.y`` under the one-step predictive of the
    ensemble ``particles`` ``(N, *S)`` with ``log_weights`` ``(N,)`` (NaN where ``y`` is
    missing)."""
    w = torch.softmax(log_weights.double(), 0)
    anc = torch.multinomial(w, samples, replacement=True, generator=generator)
    with torch.no_grad():
        x = emulator.sample(particles[anc], generator=generator)
        hx = obs.operator(x).double()
    y_pred = hx + obs.sample_noise((samples,), generator=generator, dtype=torch.float64)
    y = obs.y.double()
    below = (y_pred < y).double().mean(0)
    ties = (y_pred == y).double().mean(0)
    u = torch.rand(y.shape, generator=generator, dtype=torch.float64)
    pit = below + u * ties
    return torch.where(torch.isnan(y), torch.full_like(pit, float("nan")), pit)


def coverage(pit: Tensor, level: float) -> float:
    """Fraction of the finite PIT values inside the central ``level`` interval."""
    p = pit[torch.isfinite(pit)]
    if p.numel() == 0:
        return float("nan")
    lo, hi = (1 - level) / 2, (1 + level) / 2
    return float(((p >= lo) & (p <= hi)).double().mean())
