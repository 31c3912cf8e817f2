r"""Ensemble flow filter (EnFF; Transue, Chen, Takao & Wang, arXiv 2508.13313, code
Utah-Math-Data-Science/Data-Assimilation-Flow-Matching; Savary, Rozet & Louppe 2026, App. B.4;
docs/method.md#enff).

Training-free flow matching: the marginal velocity of a Gaussian probability path whose
endpoint (t = 1) is the forecast ensemble :math:`\{x_1^{(j)}\}` is a Monte-Carlo functional
of the ensemble; the observation enters through a guidance field; the ODE is integrated with
Euler.

Conditional paths :math:`p_t(x \mid j) = \mathcal{N}(\mu_t^{(j)}, \sigma_t^2 I)`, velocity
:math:`u_t(x \mid j) = (\dot\sigma_t / \sigma_t)(x - \mu_t^{(j)}) + \dot\mu_t^{(j)}`:

- ``"ot"``: :math:`\mu_t = t x_1^{(j)}`, :math:`\sigma_t = 1 - (1 - \sigma_{min}) t`, so
  :math:`u_t = (x_1^{(j)} - (1 - \sigma_{min}) x) / \sigma_t`; source :math:`\mathcal{N}(0, I)`;
- ``"f2p"`` (filtering-to-predictive): :math:`\mu_t = (1 - t) x_0^{(j)} + t x_1^{(j)}` with
  :math:`x_0^{(j)}` the previous analysis member whose forecast is :math:`x_1^{(j)}`,
  :math:`\sigma_t = \sigma_{min}`, :math:`u_t = x_1^{(j)} - x_0^{(j)}`; source
  :math:`x_0^{(i)} + \sigma_{min} \xi_i`.

Marginal velocity :math:`v_t(x) = \sum_j w_j u_t(x \mid j)`, :math:`w_j =
\mathrm{softmax}_j(-\lVert x - \mu_t^{(j)} \rVert^2 / (2\sigma_t^2))` (log domain, chunked).

Guidance :math:`g_t(x)`:

- ``"local"`` (all EnFF results): :math:`\hat x_1 = x + (1 - t) v_t(x)`,
  :math:`g = \lambda \nabla \ell(\hat x_1)` (gradient with respect to :math:`\hat x_1`,
  applied to :math:`x`; no Jacobian of :math:`v`);
- ``"montecarlo"``: :math:`g = \sum_j w_j (L_j / Z - 1) u_t(x \mid j)`, :math:`L_j =
  p(y \mid x_1^{(j)})`, :math:`Z = \sum_j w_j L_j` — the velocity of the likelihood-weighted
  ensemble minus the prior one (exact for the empirical prior; degenerates like a particle
  filter in high dimension);
- ``"none"``.

Euler on :math:`t_n = n / (K - 1)`: :math:`x \leftarrow x + \Delta (v_{t_n}(x) + g_{t_n}(x))`,
:math:`n = 0..K-2`.

Interpretation (ours; docs/baselines.md): with F2P and :math:`\sigma_{min}` much smaller than the
distance between members' paths, each member keeps its own increment and the local guidance
accumulates — for :math:`H = I`, :math:`\Sigma_y = \sigma_y^2 I` the analysis is the
fixed-gain nudge :math:`x_1^{(i)} + (1 - (1 - \gamma\Delta)^{K-1})(y - x_1^{(i)})`,
:math:`\gamma = \lambda / \sigma_y^2` (in normalised units), independent of the ensemble
covariance.

References:
    | Flow Matching for Efficient and Scalable Data Assimilation (Transue et al., 2025)
    | https://arxiv.org/abs/2508.13313

    | On the Guidance of Flow Matching (Feng et al., 2025)
    | https://arxiv.org/abs/2502.02150

    | Training-Free Bayesian Filtering with Generative Emulators (Savary et al., 2026)
    | https://arxiv.org/abs/2605.20028
"""

from __future__ import annotations

__all__ = ["EnFF"]

import math

import torch
from torch import Tensor

from .._utils import make_generator
from ..emulators.base import Emulator
from ..observations import Observation
from .base import (
    Ensemble,
    EnsembleFilter,
    StepInfo,
    check_inflation,
    check_particles,
    inflate,
    uniform_log_weights,
)
from .ensf import (
    Normalizer,
    _check_chunk,
    _check_positive_int,
    _log_likelihood_and_grad,
    _mixture_averages,
    _randn,
)

PATHS = ("f2p", "ot")
GUIDANCES = ("local", "none", "montecarlo")


class EnFF(EnsembleFilter):
    r"""Ensemble flow filter (Transue et al. 2025; docs/method.md#enff).

    One cycle: forecast member :math:`i` from the previous analysis member :math:`i` with
    the emulator's ``sample`` (so the F2P pairing :math:`x_0^{(i)} \to x_1^{(i)}` holds by
    construction), then the guided flow :meth:`update`.  ``obs`` ``None`` (or all values
    missing) is a forecast-only step.  Weights stay uniform.  The previous analysis is kept
    in ``Ensemble.extra["previous"]`` (the same tensor as ``particles``: the members the next
    forecast is drawn from); :meth:`step` pairs the forecast with ``ensemble.particles``
    itself, which stays right after a checkpoint resume (that does not store ``extra``).

    Defaults and sources (the authors' code, "Utah"; docs/baselines.md): Euler is the only solver
    (Utah ``sampler``); F2P with paired coupling (``use_independent_coupling = false``); local
    guidance with a constant λ (``LocalConstant``); K = 10 grid points (Utah README example, NS
    256²: F2P, K = 10, σ_min = 2.742e-4, λ = 1.0076e-3; Optuna sweeps K ∈ {5, 10, 20, 50, 100}).
    σ_min and λ have **no default** in the reference code: both are problem-specific
    (λ scales like σ_y², see the module docstring) and must be tuned (Optuna ranges
    σ_min ∈ [1e-5, 1], λ ∈ [1e-3, 10], log scale).

    Arguments:
        emulator: Anything with ``sample(x, generator=)`` (the forecast).
        path: ``"f2p"`` or ``"ot"`` conditional probability path.
        sigma_min: σ_min > 0 (for ``"ot"`` also <= 1): the path width at t = 1 (F2P: at
            every t).  Required.
        guidance_scale: λ >= 0 of the local guidance.  Required; must be ``None`` for
            ``guidance="montecarlo"`` (exact, no scale) and is ignored for ``"none"``.
        steps: Number K >= 2 of time grid points (K − 1 Euler steps; Utah's
            ``sampling_time_step_count``).
        guidance: ``"local"``, ``"none"`` or ``"montecarlo"``.
        inflation: Multiplicative posterior inflation λ_infl >= 1 (docs/method.md#baselines).
        mean, std: State normalisation as in :class:`~genfilter.filters.ensf.EnSF` (the
            flow runs on :math:`z = (x - m)/s`, ``H`` sees de-normalised states; the OT source
            is N(0, I) in these units — pass climatological statistics for unnormalised
            systems).  ``None``: no normalisation.
        mixture_chunk: Query rows per chunk of the O(N² D) weight term (``None``: automatic).
        generator: ``torch.Generator``, int seed or ``None``.
    """

    def __init__(
        self,
        emulator: Emulator,
        *,
        path: str = "f2p",
        sigma_min: float,
        guidance_scale: float | None,
        steps: int = 10,
        guidance: str = "local",
        inflation: float = 1.0,
        mean: float | Tensor | None = None,
        std: float | Tensor | None = None,
        mixture_chunk: int | None = None,
        generator: torch.Generator | int | None = None,
    ) -> None:
        if not callable(getattr(emulator, "sample", None)):
            raise TypeError("emulator must implement sample()")
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {path!r}")
        sigma_min = float(sigma_min)
        if not (math.isfinite(sigma_min) and sigma_min > 0.0):
            raise ValueError(f"sigma_min must be a finite number > 0, got {sigma_min}")
        if path == "ot" and sigma_min > 1.0:
            raise ValueError(f"sigma_min must be <= 1 for path='ot', got {sigma_min}")
        if guidance not in GUIDANCES:
            raise ValueError(f"guidance must be one of {GUIDANCES}, got {guidance!r}")
        if guidance == "local":
            if guidance_scale is None:
                raise ValueError("guidance_scale (λ) is required for guidance='local', got None")
            guidance_scale = float(guidance_scale)
            if not (math.isfinite(guidance_scale) and guidance_scale >= 0.0):
                raise ValueError(f"guidance_scale must be finite and >= 0, got {guidance_scale}")
        elif guidance == "montecarlo":
            if guidance_scale is not None:
                raise ValueError(
                    "guidance_scale must be None for guidance='montecarlo' (the Monte-Carlo "
                    f"guidance is exact for the ensemble prior and has no scale), got "
                    f"{guidance_scale!r}"
                )
        else:
            guidance_scale = None
        self.emulator = emulator
        self.path, self.guidance = path, guidance
        self.sigma_min = sigma_min
        self.guidance_scale = guidance_scale
        self.steps = _check_positive_int(steps, "steps", minimum=2)
        self.inflation = check_inflation(inflation)
        self.normalizer = Normalizer(mean, std)
        self.mixture_chunk = _check_chunk(mixture_chunk, "mixture_chunk")
        self.generator = make_generator(generator)

    # ---------------------------------------------------------------- flow
    def velocity(
        self,
        x: Tensor,
        t: float,
        x1: Tensor,
        x0: Tensor | None,
        log_likelihoods: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None, Tensor]:
        r"""Monte-Carlo marginal velocity :math:`v_t(x)` ``(N, D)`` on normalised flat states;
        with ``log_likelihoods`` :math:`\log L_j` ``(N,)`` also the Monte-Carlo guidance
        :math:`g_t(x)`.  Returns ``(v, g or None, argmax_j w_ij)``."""
        biases = (None,) if log_likelihoods is None else (None, log_likelihoods)
        if self.path == "f2p":
            centres = (1.0 - t) * x0 + t * x1
            avgs, arg = _mixture_averages(
                x, centres, self.sigma_min**2, x1 - x0, biases, self.mixture_chunk
            )
            v = avgs[0]
            g = avgs[1] - v if log_likelihoods is not None else None
        else:
            sigma_t = 1.0 - (1.0 - self.sigma_min) * t
            avgs, arg = _mixture_averages(x, t * x1, sigma_t**2, x1, biases, self.mixture_chunk)
            v = (avgs[0] - (1.0 - self.sigma_min) * x) / sigma_t
            g = (avgs[1] - avgs[0]) / sigma_t if log_likelihoods is not None else None
        return v, g, arg

    def update(
        self, forecast: Tensor, obs: Observation | None, previous: Tensor | None = None
    ) -> tuple[Tensor, dict]:
        r"""The EnFF analysis (module docstring) of a forecast ensemble ``(N, *S)``.

        Arguments:
            forecast: :math:`x_1^{(j)}`, ``(N, *S)``.
            obs: The observation; ``None`` integrates the unguided flow (which transports
                the source to the forecast ensemble).
            previous: For ``path="f2p"``: the previous analysis ``(N, *S)``, member ``i``
                being the state the forecast member ``i`` was drawn from.

        Returns:
            The analysis ``(N, *S)`` and diagnostics: ``pair_switches`` (F2P: number of
            (member, step) pairs whose largest velocity weight is another member's path —
            the path-crossing pitfall of docs/baselines.md; 0 for OT).
        """
        check_particles(forecast, "forecast")
        state_shape = tuple(forecast.shape[1:])
        self.normalizer.check(state_shape)
        N = forecast.shape[0]
        x1 = self.normalizer.normalize(forecast).reshape(N, -1)
        x0 = None
        if self.path == "f2p":
            if previous is None:
                raise ValueError("path='f2p' needs the previous analysis (previous=)")
            if previous.shape != forecast.shape:
                raise ValueError(
                    f"previous must have the forecast's shape {tuple(forecast.shape)}, got "
                    f"{tuple(previous.shape)}"
                )
            x0 = self.normalizer.normalize(previous.to(forecast)).reshape(N, -1)
        reduced = obs.observed() if obs is not None else None
        if reduced is not None and reduced.y.shape[0] == 0:
            reduced = None
        guidance = self.guidance if reduced is not None else "none"
        log_l = None
        if guidance == "montecarlo":
            log_l, _ = _log_likelihood_and_grad(reduced, x1, self.normalizer, state_shape)
        noise = _randn(x1.shape, x1, self.generator)
        x = x0 + self.sigma_min * noise if self.path == "f2p" else noise
        K = self.steps
        dt = 1.0 / (K - 1)
        switches = 0
        own = torch.arange(N, device=x.device)
        for n in range(K - 1):
            t = n * dt
            v, g, arg = self.velocity(x, t, x1, x0, log_l)
            if self.path == "f2p":
                switches += int((arg != own).sum())
            if guidance == "local" and self.guidance_scale != 0.0:
                x1_hat = x + (1.0 - t) * v
                _, grad = _log_likelihood_and_grad(reduced, x1_hat, self.normalizer, state_shape)
                g = self.guidance_scale * grad
            x = x + dt * (v + g) if g is not None else x + dt * v
        if not torch.isfinite(x).all():
            raise FloatingPointError(
                "EnFF analysis produced non-finite states; lower guidance_scale or normalise "
                "the state (mean/std) (docs/baselines.md)"
            )
        xa = self.normalizer.denormalize(x.reshape(forecast.shape))
        return inflate(xa, self.inflation), {"pair_switches": switches}

    # ---------------------------------------------------------------- protocol
    def init(self, particles: Tensor) -> Ensemble:
        check_particles(particles)
        self.normalizer.check(tuple(particles.shape[1:]))
        x = particles.clone()
        return Ensemble(x, uniform_log_weights(x.shape[0]), extra={"previous": x})

    def step(self, ensemble: Ensemble, obs: Observation | None) -> tuple[Ensemble, StepInfo]:
        previous = ensemble.particles  # member i's forecast is drawn from member i: pairs hold

        def analysis(xf, reduced):
            return self.update(xf, reduced, previous)

        _, xa, info = self._forecast_analysis_step(
            ensemble, obs, analysis, extra={"pair_switches": 0}
        )
        return Ensemble(xa, uniform_log_weights(ensemble.size), extra={"previous": xa}), info
