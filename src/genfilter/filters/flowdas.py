r"""FlowDAS-style ensemble (Savary, Rozet & Louppe 2026, §4.2;
docs/method.md#flowdas-style-ensemble): every member propagated with the emulator's optimal
proposal, no weights, no resampling.

.. math:: x_i^{k+1} \sim p(x^{k+1} \mid x_i^k, y^{k+1}) \quad (i = 1..N),

drawn with ``emulator.sample_posterior`` (MMPS-guided reverse diffusion for a
:class:`~genfilter.emulators.DiffusionEmulator`, docs/method.md#optimal-proposal); without
an observation, :math:`x_i^{k+1} \sim p(x^{k+1} \mid x_i^k)` with ``emulator.sample``.

With a :class:`~genfilter.emulators.StochasticInterpolantEmulator` the ensemble runs in
FlowDAS's own framework by default: every member follows the interpolant's forward SDE
guided by FlowDAS's Monte-Carlo end-point likelihood
(:meth:`~genfilter.emulators.StochasticInterpolantEmulator.sample_flowdas`; Chen et al.
2025), not the MMPS optimal proposal (``guidance="proposal"`` selects the latter;
docs/baselines.md#flowdas).

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
        guidance: ``"proposal"`` (``emulator.sample_posterior``), ``"flowdas"``
            (``emulator.sample_flowdas``: FlowDAS's guided interpolant SDE; a
            :class:`~genfilter.emulators.StochasticInterpolantEmulator`) or ``"auto"``
            (DEFAULT: ``"flowdas"`` when the emulator has ``sample_flowdas``, else
            ``"proposal"``).
        generator: ``torch.Generator``, int seed or ``None``.
    """

    GUIDANCES = ("auto", "proposal", "flowdas")

    def __init__(
        self,
        emulator: Emulator,
        *,
        guidance: str = "auto",
        generator: torch.Generator | int | None = None,
    ):
        if guidance not in self.GUIDANCES:
            raise ValueError(f"guidance must be one of {self.GUIDANCES}, got {guidance!r}")
        if guidance == "auto":
            guidance = (
                "flowdas" if callable(getattr(emulator, "sample_flowdas", None)) else "proposal"
            )
        method = "sample_flowdas" if guidance == "flowdas" else "sample_posterior"
        for name in ("sample", method):
            if not callable(getattr(emulator, name, None)):
                raise TypeError(
                    f"emulator must implement {name}() (FlowDASEnsemble with guidance="
                    f"{guidance!r} propagates every member with {method})"
                )
        self.emulator = emulator
        self.guidance = guidance
        self._guided = getattr(emulator, method)
        self.generator = make_generator(generator)

    def step(self, ensemble: Ensemble, obs: Observation | None) -> tuple[Ensemble, StepInfo]:
        t0 = time.perf_counter()
        check_particles(ensemble.particles, "ensemble.particles")
        N = ensemble.size
        reduced = obs.observed() if obs is not None else None
        if reduced is None or reduced.y.shape[0] == 0:
            x = self.emulator.sample(ensemble.particles, generator=self.generator)
        else:
            x = self._guided(ensemble.particles, reduced, generator=self.generator)
        info = StepInfo(
            ess=float(N),
            inflation=1.0,
            seconds=time.perf_counter() - t0,
            spread_forecast=float("nan"),
            spread_analysis=ensemble_spread(x),
        )
        return Ensemble(x, uniform_log_weights(N)), info
