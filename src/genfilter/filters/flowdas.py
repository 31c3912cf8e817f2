r"""FlowDAS-style ensemble (Savary, Rozet & Louppe 2026, §4.2;
docs/method.md#flowdas-style-ensemble): every member propagated with the emulator's optimal
proposal, no weights, no resampling.

.. math:: x_i^{k+1} \sim p(x^{k+1} \mid x_i^k, y^{k+1}) \quad (i = 1..N),

drawn with ``emulator.sample_posterior`` (MMPS-guided reverse diffusion for a
:class:`~genfilter.emulators.DiffusionEmulator`, docs/method.md#optimal-proposal); without
an observation, :math:`x_i^{k+1} \sim p(x^{k+1} \mid x_i^k)` with ``emulator.sample``.

This is the "pseudo FA-APF" of the paper's §4.2 — FA-APF (docs/method.md#fa-apf) without the
weighting/resampling stage — and **not** the FlowDAS paper's own method (Chen et al.,
NeurIPS 2025), which trains a dedicated conditional stochastic-interpolant drift on a
10-frame window and guides it with an un-squared DPS-like misfit over Monte-Carlo endpoint
estimates.  Forecast and analysis are fused in one guided sample per member,
so there is no separate forecast ensemble: ``spread_forecast`` is reported as NaN.

Because members are never reweighted, the ensemble does not target the filtering
distribution :math:`p(x^k \mid y^{1:k})` in general: member :math:`i` samples
:math:`p(x^{k+1} \mid x_i^k, y^{k+1})`, but the :math:`x_i^k` are not reweighted by
:math:`p(y^{k+1} \mid x_i^k)`, so members whose past disagrees with the new observation
keep their full weight (the gap FA-APF's weights close).

References:
    | Training-Free Bayesian Filtering with Generative Emulators (Savary et al., 2026)
    | https://arxiv.org/abs/2605.20028

    | FlowDAS: A Stochastic Interpolant-based Framework for Data Assimilation (Chen et al., 2025)
    | https://arxiv.org/abs/2501.16642
"""

from __future__ import annotations

__all__ = ["FlowDASEnsemble"]

import time

import torch

from .._utils import make_generator
from ..emulators.base import Emulator
from ..observations import Observation
from .base import (
    Ensemble,
    EnsembleFilter,
    StepInfo,
    check_particles,
    ensemble_spread,
    uniform_log_weights,
)


class FlowDASEnsemble(EnsembleFilter):
    r"""Unweighted ensemble of optimal-proposal chains (docs/method.md#flowdas-style-ensemble).

    Arguments:
        emulator: An emulator with ``sample(x, generator=)`` and
            ``sample_posterior(x, obs, generator=)`` (e.g. a
            :class:`~genfilter.emulators.DiffusionEmulator`).
        generator: ``torch.Generator``, int seed or ``None``.
    """

    def __init__(self, emulator: Emulator, *, generator: torch.Generator | int | None = None):
        for method in ("sample", "sample_posterior"):
            if not callable(getattr(emulator, method, None)):
                raise TypeError(
                    f"emulator must implement {method}() (FlowDASEnsemble propagates every "
                    "member with the optimal proposal sample_posterior)"
                )
        self.emulator = emulator
        self.generator = make_generator(generator)

    def step(self, ensemble: Ensemble, obs: Observation | None) -> tuple[Ensemble, StepInfo]:
        t0 = time.perf_counter()
        check_particles(ensemble.particles, "ensemble.particles")
        N = ensemble.size
        reduced = obs.observed() if obs is not None else None
        if reduced is None or reduced.y.shape[0] == 0:
            x = self.emulator.sample(ensemble.particles, generator=self.generator)
        else:
            x = self.emulator.sample_posterior(
                ensemble.particles, reduced, generator=self.generator
            )
        info = StepInfo(
            ess=float(N),
            inflation=1.0,
            seconds=time.perf_counter() - t0,
            spread_forecast=float("nan"),
            spread_analysis=ensemble_spread(x),
        )
        return Ensemble(x, uniform_log_weights(N)), info
