r"""Bootstrap particle filter (SPEC §5, SPEC_BASELINES §B1).

One cycle: propagate every particle with the emulator's ``sample``; multiply the weights by
:math:`\mathcal{N}(y; H(x_i), \Sigma_y)`; record the evidence increment; resample when the
ESS falls below :math:`\kappa N` (genfilter default κ = 1/2, systematic).
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
    check_particles,
    effective_sample_size,
    uniform_log_weights,
)
from .resampling import SCHEMES, resample
from .tempering import find_inflation


class BootstrapPF(EnsembleFilter):
    r"""Bootstrap particle filter (SPEC_BASELINES §B1).

    Arguments:
        emulator: Anything with ``sample(x, generator=)``.
        resample_threshold: κ: resample when ESS < κN (1.0 = every step, DAPPER's default;
            genfilter's default 0.5, SPEC §5).
        resampling: Resampling scheme name.
        ess_interval: Optional likelihood tempering ``(N_min, N_max)`` as fractions of N
            (same rule as FA-APF, SPEC §3.3; off by default, report separately).
        generator: ``torch.Generator``, int seed or ``None``.
    """

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
        if ess_interval is not None:
            lo, hi = (float(v) for v in ess_interval)
            if not (0.0 < lo <= hi <= 1.0):
                raise ValueError(f"ess_interval must be fractions of N in (0, 1], got {ess_interval}")
            ess_interval = (lo, hi)
        self.emulator = emulator
        self.resample_threshold = float(resample_threshold)
        self.resampling = resampling
        self.ess_interval = ess_interval
        self.generator = make_generator(generator)


    def step(self, ensemble: Ensemble, obs: Observation | None) -> tuple[Ensemble, StepInfo]:
        t0 = time.perf_counter()
        check_particles(ensemble.particles, "ensemble.particles")
        N = ensemble.size
        x = self.emulator.sample(ensemble.particles, generator=self.generator)
        lw = ensemble.log_weights.double()
        reduced = obs.observed() if obs is not None else None
        beta, log_evidence, extra = 1.0, None, {}
        if reduced is not None and reduced.y.shape[0] > 0:
            ll = reduced.log_likelihood(x).double()
            if bool(torch.isnan(ll).any()):
                raise FloatingPointError("BPF log-likelihoods are NaN (non-finite particles?)")
            if bool(torch.isneginf(ll).all()):
                raise ValueError(
                    "all BPF log-likelihoods are -inf: no particle is compatible with the observation"
                )
            log_evidence = float(torch.logsumexp(lw + ll, 0))
            if self.ess_interval is not None:
                res = find_inflation(ll, max(1.0, self.ess_interval[0] * N),
                                     max(1.0, self.ess_interval[1] * N), prior_log_weights=lw)
                lw, beta = res.log_weights, res.beta
                extra["ess_untempered"] = res.ess_untempered
            else:
                lw = lw + ll
                lw = lw - torch.logsumexp(lw, 0)
        ess = effective_sample_size(lw)
        resampled = ess < self.resample_threshold * N or (
            self.resample_threshold >= 1.0 and reduced is not None
        )
        if resampled:
            anc = resample(lw, self.resampling, generator=self.generator)
            x = x[anc]
            lw = uniform_log_weights(N)
            extra["unique_ancestors"] = int(torch.unique(anc).numel())
        extra["resampled"] = bool(resampled)
        info = StepInfo(ess=ess, inflation=beta, log_evidence=log_evidence,
                        seconds=time.perf_counter() - t0, extra=extra)
        return Ensemble(x, lw.to(ensemble.log_weights.dtype)), info
