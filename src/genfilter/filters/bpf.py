r"""Bootstrap particle filter (Gordon, Salmond & Smith 1993), the particle-filter baseline
of Savary, Rozet & Louppe (2026, App. B.1); docs/method.md#bootstrap-particle-filter.

One cycle: propagate every particle with the emulator's ``sample``; multiply the weights by
:math:`\mathcal{N}(y; H(x_i), \Sigma_y)`; record the evidence increment; resample when the
ESS falls below :math:`\kappa N` (genfilter default κ = 1/2, systematic).

References:
    | Novel Approach to Nonlinear/Non-Gaussian Bayesian State Estimation
    | (Gordon, Salmond & Smith, 1993), IEE Proceedings F 140, 107-113

    | Training-Free Bayesian Filtering with Generative Emulators (Savary et al., 2026)
    | https://arxiv.org/abs/2605.20028

    | Obstacles to High-Dimensional Particle Filtering (Snyder et al., 2008)
    | Monthly Weather Review 136, 4629-4640
"""

from __future__ import annotations

__all__ = ["BootstrapPF"]

import time

import torch

from .._utils import make_generator
from ..emulators.base import Emulator
from ..observations import Observation
from .base import (
    Ensemble,
    EnsembleFilter,
    StepInfo,
    check_finite,
    check_particles,
    effective_sample_size,
    uniform_log_weights,
)
from .resampling import SCHEMES, resample
from .weighting import check_ess_interval, reweight


class BootstrapPF(EnsembleFilter):
    r"""Bootstrap particle filter (docs/method.md#bootstrap-particle-filter).

    Arguments:
        emulator: Anything with ``sample(x, generator=)``.
        resample_threshold: κ: resample when ESS < κN (1.0 = every step, DAPPER's default;
            genfilter's default 0.5, a project choice).
        resampling: Resampling scheme name.
        ess_interval: Optional likelihood tempering ``(N_min, N_max)`` as fractions of N
            (same rule as FA-APF, docs/method.md#inflation; off by default, report
            separately).
        generator: ``torch.Generator``, int seed or ``None``.

    Under ``torchrun`` the particles are split across the processes
    (:mod:`genfilter.distributed`): each rank propagates its block, the weights are
    gathered and the resampling is computed on all of them.
    """

    shardable = True

    def __init__(
        self,
        emulator: Emulator,
        *,
        resample_threshold: float = 0.5,
        resampling: str = "systematic",
        ess_interval: tuple[float, float] | None = None,
        generator: torch.Generator | int | None = None,
    ) -> None:
        if not callable(getattr(emulator, "sample", None)):
            raise TypeError("emulator must implement sample()")
        if not 0.0 <= float(resample_threshold) <= 1.0:
            raise ValueError(f"resample_threshold must be in [0, 1], got {resample_threshold}")
        if resampling not in SCHEMES:
            raise ValueError(f"resampling must be one of {sorted(SCHEMES)}, got {resampling!r}")
        ess_interval = check_ess_interval(ess_interval)
        self.emulator = emulator
        self.resample_threshold = float(resample_threshold)
        self.resampling = resampling
        self.ess_interval = ess_interval
        self.generator = make_generator(generator)

    def step(self, ensemble: Ensemble, obs: Observation | None) -> tuple[Ensemble, StepInfo]:
        """Propagate, weight (with optional inflation), resample when the ESS is low."""
        t0 = time.perf_counter()
        check_particles(ensemble.particles, "ensemble.particles")
        # ensemble: this rank's block when sharded (genfilter.distributed)
        prior = self._global(ensemble.log_weights)
        N = prior.shape[0]
        x = self._emulator().sample(ensemble.particles, generator=self.generator)
        check_finite(x, "BootstrapPF: the forecast")
        reduced = obs.observed() if obs is not None else None
        info = StepInfo(ess=effective_sample_size(prior))
        lw = prior.double()
        if reduced is not None and reduced.y.shape[0] > 0:
            ll = self._global(reduced.log_likelihood(x))
            rw = reweight(lw, ll, self.ess_interval, who="BootstrapPF")
            lw = rw.log_weights
            info = StepInfo(**rw.diagnostics())
        else:
            info.ess = effective_sample_size(lw)
        info.resampled = info.ess < self.resample_threshold * N or (
            self.resample_threshold >= 1.0 and reduced is not None
        )
        if info.resampled:
            anc = resample(lw, self.resampling, generator=self.generator)
            x = x[anc] if self.sharding is None else self.sharding.take(x, anc)
            lw = uniform_log_weights(N)
            info.unique_ancestors = int(torch.unique(anc).numel())
        info.seconds = time.perf_counter() - t0
        return Ensemble(x, self._local(lw).to(ensemble.log_weights.dtype)), info
