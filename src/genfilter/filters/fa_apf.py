r"""Fully adapted auxiliary particle filter (FA-APF; Savary, Rozet & Louppe 2026, §3,
Algorithm 1; docs/method.md#fa-apf).

For a new observation :math:`y^{k+1}` and equally weighted particles :math:`x_i^k`:

1. predictive means :math:`\mu_i = \mathbb{E}[x^{k+1} \mid x_i^k]` — one denoiser call per
   particle at :math:`t = 1` (paper Eq. 27–28; docs/method.md#tweedie-mean);
2. weights :math:`\log \tilde w_i = \log \mathcal{N}(y; H(\mu_i), \Sigma_y)` (``"dirac"``,
   paper Eq. 23–26) or :math:`\log \mathcal{N}(y; H(\mu_i), \Sigma_y + H V_i H^\top)`
   (``"gaussian"``: moment-matched with the Tweedie covariance, exact for linear-Gaussian
   models; ``"pooled"``: with the transition's variance in observation space pooled over
   one forecast per particle; docs/method.md#fa-apf-weights);
3. inflation :math:`\beta` so that the ESS lies in :math:`[N_{\min}, N_{\max}]` (paper §3.1,
   :func:`~genfilter.filters.tempering.find_inflation`; docs/method.md#inflation);
4. ancestors by resampling (systematic by default; docs/method.md#resampling);
5. propagation with the optimal proposal :math:`p(x^{k+1} \mid x_{a_i}^k, y^{k+1})`
   (MMPS-guided reverse diffusion, paper §3.2 and Algorithm 2;
   docs/method.md#optimal-proposal) — with the un-inflated :math:`\Sigma_y`;
6. uniform weights; log-evidence increment
   :math:`\log \sum_i \pi_i \, p(y \mid x_i^k)` with the un-inflated weights
   (docs/method.md#log-evidence).

References:
    | Training-Free Bayesian Filtering with Generative Emulators (Savary et al., 2026)
    | https://arxiv.org/abs/2605.20028

    | Filtering via Simulation: Auxiliary Particle Filters (Pitt & Shephard, 1999)
    | Journal of the American Statistical Association 94, 590-599

    | Learning Diffusion Priors from Observations by Expectation Maximization
    | (Rozet et al., 2024), https://arxiv.org/abs/2405.13712
"""

from __future__ import annotations

__all__ = ["FAAPF", "WEIGHTS"]

import math
import time
from collections.abc import Sequence

import torch
from torch import Tensor

from .._utils import make_generator
from ..emulators.base import Emulator
from ..observations import Observation, noise_matrix
from .base import (
    Ensemble,
    EnsembleFilter,
    StepInfo,
    check_finite,
    check_particles,
    effective_sample_size,
    is_uniform,
    uniform_log_weights,
)
from .letkf import _check_radius
from .local_weights import (
    column_ess,
    local_ancestors,
    local_inflation,
    local_log_likelihoods,
    localisation_weights,
)
from .resampling import SCHEMES, resample
from .weighting import check_ess_interval, reweight

WEIGHTS = ("dirac", "gaussian", "pooled", "exact")
"""The FA-APF weight approximations (docs/method.md#fa-apf-weights)."""


def _gaussian_log_density(residual: Tensor, cov: Tensor) -> Tensor:
    r""":math:`\log N(r; 0, C)` for residuals ``(N, M)`` and covariances ``(N, M, M)``, or
    one covariance ``(M, M)`` for every particle (factorised once)."""
    M = residual.shape[-1]
    L, info = torch.linalg.cholesky_ex(cov)
    if bool((info != 0).any()):
        bad = (info != 0).nonzero().flatten()
        which = (
            "every particle"
            if cov.dim() == 2
            else f"{bad.numel()} particle(s) (first {bad[:5].tolist()})"
        )
        raise FloatingPointError(
            f"predictive covariance Σ_y + H V Hᵀ is not positive definite for {which}; "
            "the denoiser's Jacobian is not a valid covariance here — use weights='dirac'"
        )
    z = torch.linalg.solve_triangular(L, residual.unsqueeze(-1), upper=False).squeeze(-1)
    logdet = 2 * torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * ((z**2).sum(-1) + logdet + M * math.log(2 * math.pi))


class FAAPF(EnsembleFilter):
    r"""Fully adapted auxiliary particle filter (Savary, Rozet & Louppe 2026, Algorithm 1;
    docs/method.md#fa-apf).

    Arguments:
        emulator: An emulator with ``predict_mean`` and ``sample_posterior`` (e.g. a
            :class:`~genfilter.emulators.DiffusionEmulator`).
        weights: ``"dirac"`` (paper), ``"gaussian"`` (moment-matched; needs an emulator
            with ``predict_obs_moments`` and forms ``M×M`` matrices, so ``M ≤ max_obs_gaussian``),
            ``"pooled"`` (moment-matched with one transition variance for all particles:
            :math:`\log \mathcal{N}(y; H(\mu_i), \Sigma_y + \mathrm{diag}(\bar v))`,
            :math:`\bar v` the mean over particles of :math:`(H(x'_i) - H(\mu_i))^2` for one
            forecast :math:`x'_i` of each; one ``sample`` call more than ``"dirac"``, no
            Jacobian, ``M ≤ max_obs_gaussian``)
            or ``"exact"``: the Monte-Carlo estimate
            :math:`\log \frac1K \sum_{m=1}^{K} \mathcal{N}(y; H(x'_m), \Sigma_y)`,
            :math:`x'_m \sim p(\cdot \mid x_i^k)` drawn with the emulator's ``sample``
            (``K = exact_samples``; a reference, ``K`` times the cost of a forecast; the
            paper reports using it in preliminary Lorenz-63 experiments).
        ess_interval: ``(N_min, N_max)`` as fractions of ``N`` (default ``(50/256, 60/256)``,
            the official GenCast run; each bound is at least one particle, so small N works);
            ``None`` disables inflation (β = 1 always).
        resampling: ``"systematic"`` (default), ``"stratified"``, ``"residual"`` or
            ``"multinomial"``.
        skip_identical: Skip weighting when all particles are equal (first step from one
            initial state; official code).
        generator: ``torch.Generator``, int seed or ``None`` (seeded from the OS; see
            ``self.generator.initial_seed()``).
        max_obs_gaussian: Largest ``M`` for ``"gaussian"`` and ``"pooled"`` weights.
        exact_samples: Draws per particle ``K`` of the ``"exact"`` weights.
        localization: Gaspari–Cohn radius (grid cells) of localised weights: every grid
            point gets weights from the observations near it, its own inflation and its own
            systematic resampling (one uniform for all points), and each particle is patched
            together from its ancestors at every point before the guided proposal
            (:mod:`genfilter.filters.local_weights`, Penny & Miyoshi 2016;
            docs/method.md#localised-weights). ``None`` (default): the paper's global
            weights. Needs ``weights="dirac"``, systematic resampling and an observation
            operator with ``locations``; runs in one process.
        periodic: With ``localization``: ``True`` (every axis periodic with the grid length),
            ``False``, or the domain length of each axis (``0``: not periodic).

    Under ``torchrun`` the particles are split across the processes
    (:mod:`genfilter.distributed`): each rank runs the emulator on its block, the weights
    are gathered and the inflation and resampling are computed on all of them.
    """

    def __init__(
        self,
        emulator: Emulator,
        *,
        weights: str = "dirac",
        ess_interval: tuple[float, float] | None = (50 / 256, 60 / 256),
        resampling: str = "systematic",
        skip_identical: bool = True,
        generator: torch.Generator | int | None = None,
        max_obs_gaussian: int = 256,
        exact_samples: int = 256,
        localization: float | None = None,
        periodic: bool | Sequence[float] = True,
    ) -> None:
        for name in ("predict_mean", "sample_posterior", "sample"):
            if not callable(getattr(emulator, name, None)):
                raise TypeError(f"emulator must implement {name}() for FA-APF")
        if weights not in WEIGHTS:
            raise ValueError(f"weights must be one of {list(WEIGHTS)}, got {weights!r}")
        if (
            isinstance(exact_samples, bool)
            or not isinstance(exact_samples, int)
            or exact_samples < 1
        ):
            raise ValueError(f"exact_samples must be an integer >= 1, got {exact_samples!r}")
        if weights == "gaussian" and not callable(getattr(emulator, "predict_obs_moments", None)):
            raise TypeError("weights='gaussian' needs an emulator with predict_obs_moments()")
        ess_interval = check_ess_interval(ess_interval)
        if resampling not in SCHEMES:
            raise ValueError(f"resampling must be one of {sorted(SCHEMES)}, got {resampling!r}")
        self.emulator = emulator
        self.weights = weights
        self.ess_interval = ess_interval
        self.resampling = resampling
        self.skip_identical = bool(skip_identical)
        self.generator = make_generator(generator)
        self.max_obs_gaussian = int(max_obs_gaussian)
        self.exact_samples = int(exact_samples)
        if localization is not None:
            localization = _check_radius(localization)
            if weights != "dirac":
                raise ValueError(
                    f"localization needs weights='dirac' (per-observation terms), got {weights!r}"
                )
            if resampling != "systematic":
                raise ValueError(
                    f"localization resamples systematically at every grid point; "
                    f"resampling must be 'systematic', got {resampling!r}"
                )
            if not isinstance(periodic, bool) and (
                isinstance(periodic, (str, bytes)) or not isinstance(periodic, Sequence)
            ):
                raise TypeError(
                    f"periodic must be a bool or a sequence of domain lengths, got {periodic!r}"
                )
        self.localization = localization
        self.periodic = periodic

    @property
    def shardable(self) -> bool:
        """Particles can be split across processes, except with localised weights (the
        local resampling patches every particle from ancestors anywhere in the ensemble) and
        with model noise set from the whole ensemble (an emulator with ``adapt``)."""
        return self.localization is None and not callable(getattr(self.emulator, "adapt", None))

    # ------------------------------------------------------------------ weights
    def log_likelihoods(self, particles: Tensor, obs: Observation) -> Tensor:
        r"""Per-particle :math:`\log \hat p(y \mid x_i^k)` ``(N,)``, un-inflated
        (paper Eq. 23–26; docs/method.md#fa-apf-weights)."""
        if self.weights == "exact":
            return self._exact_log_likelihoods(particles, obs)
        if self.weights == "pooled":
            return self._pooled_log_likelihoods(particles, obs)
        obs = self._seen_through_model_noise(obs)
        if self.weights == "dirac":
            return self._dirac(particles, obs)[1]
        self._check_matrix_size(obs)
        _, hmu, hvh = self._emulator().predict_obs_moments(particles, obs, generator=self.generator)
        check_finite(hmu, "FAAPF: the emulator's predicted observation mean")
        return self._moment_matched(obs, hmu, hvh)

    def _check_matrix_size(self, obs: Observation) -> None:
        """The moment-matched weights form ``M×M`` matrices: ``M ≤ max_obs_gaussian``."""
        M = obs.y.shape[0]
        if M > self.max_obs_gaussian:
            raise ValueError(
                f"weights={self.weights!r} forms M×M matrices; M = {M} > max_obs_gaussian = "
                f"{self.max_obs_gaussian}. Use weights='dirac' or raise max_obs_gaussian."
            )

    @staticmethod
    def _moment_matched(obs: Observation, hmu: Tensor, spread: Tensor) -> Tensor:
        r""":math:`\log \mathcal{N}(y; H(\mu_i), \Sigma_y + S)` ``(N,)`` for ``hmu (N, M)``
        and the transition's covariance in observation space ``spread``: ``(N, M, M)``, one
        per particle, or ``(M, M)``, one for all (symmetrised)."""
        spread = spread.double()
        cov = noise_matrix(obs.noise, obs.y.shape[0]).to(spread) + spread
        cov = (cov + cov.transpose(-1, -2)) / 2
        return _gaussian_log_density(obs.y.to(spread) - hmu.to(spread), cov)

    def _seen_through_model_noise(self, obs: Observation) -> Observation:
        """``obs`` with the emulator's additive model noise added to its noise, for weights
        built on the emulator's predictive moments (an emulator with ``widen``, e.g.
        :class:`~genfilter.emulators.jittered.Jittered`); ``obs`` otherwise."""
        widen = getattr(self._emulator(), "widen", None)
        return obs if widen is None else widen(obs)

    def _means(self, particles: Tensor) -> Tensor:
        r"""The predictive means :math:`\mu_i` (checked finite)."""
        mu = self._emulator().predict_mean(particles, generator=self.generator)
        check_finite(mu, "FAAPF: the emulator's predict_mean")
        return mu

    def _dirac(self, particles: Tensor, obs: Observation) -> tuple[Tensor, Tensor]:
        r"""The predictive means :math:`\mu_i` and the dirac log-likelihoods ``(N,)`` of
        ``obs`` as :meth:`_seen_through_model_noise` gives it."""
        mu = self._means(particles)
        return mu, obs.log_likelihood(mu).double()

    def _pooled_log_likelihoods(self, particles: Tensor, obs: Observation) -> Tensor:
        r""":math:`\log \mathcal{N}(y; H(\mu_i), \Sigma_y + \mathrm{diag}(\bar v))` with
        :math:`\bar v_m = \frac1N \sum_j (H(x'_j) - H(\mu_j))_m^2`, one forecast
        :math:`x'_j` of every particle (all ranks' particles under ``torchrun``): the
        transition's variance in observation space, pooled over the ensemble
        (docs/method.md#fa-apf-weights). The forecasts come from the emulator's ``sample``,
        model noise included, so ``obs`` is not widened."""
        self._check_matrix_size(obs)
        mu = self._means(particles)
        draws = self._emulator().sample(particles, generator=self.generator)
        check_finite(draws, "FAAPF: the emulator's forecasts for the pooled weights")
        hmu = obs.predict(mu).double()
        v = self._global((obs.predict(draws).double() - hmu) ** 2).mean(0)
        return self._moment_matched(obs, hmu, torch.diag(v))

    def _exact_log_likelihoods(self, particles: Tensor, obs: Observation) -> Tensor:
        r"""Monte-Carlo :math:`\log p(y \mid x_i^k)` from ``exact_samples`` forecasts of
        every particle (one batched ``sample`` call of ``N K`` states). An emulator with
        its own ``exact_log_likelihoods`` (the oracle's
        :class:`~genfilter.emulators.oracle.ImportanceSampledEmulator`, which keeps the
        draws for its proposal) computes them itself, in one process."""
        N, K = particles.shape[0], self.exact_samples
        own = getattr(self.emulator, "exact_log_likelihoods", None)
        if own is not None and self.sharding is None:
            return own(particles, obs, K, generator=self.generator)
        draws = self._emulator().sample(
            particles.repeat_interleave(K, dim=0), generator=self.generator
        )
        check_finite(draws, "FAAPF: the emulator's forecasts for the exact weights")
        ll = obs.log_likelihood(draws).double().reshape(N, K)
        return torch.logsumexp(ll, dim=1) - math.log(K)

    # ------------------------------------------------------------------ step
    def step(self, ensemble: Ensemble, obs: Observation | None) -> tuple[Ensemble, StepInfo]:
        """One FA-APF step (paper Algorithm 1; docs/method.md#fa-apf)."""
        t0 = time.perf_counter()
        x = ensemble.particles  # this rank's block when sharded (genfilter.distributed)
        check_particles(x, "ensemble.particles")
        prior = self._global(ensemble.log_weights)
        N = prior.shape[0]
        reduced = obs.observed() if obs is not None else None
        em = self._emulator()
        adaptive = getattr(em, "adaptive", False)  # model noise read from the innovation
        adapt = getattr(em, "adapt", None)
        if adapt is not None:  # model noise set from this ensemble (SpreadJittered)
            adapt(x, generator=self.generator, **({"obs": reduced} if adaptive else {}))
        if reduced is None or reduced.y.shape[0] == 0:
            return self._forecast(ensemble, prior, t0)
        # 1. weights from one denoiser call per particle (the localised weights also need
        # the predictive means); the weights live where the prior weights are (the CPU),
        # whatever the particles' device
        if self.localization is None:
            mu, ll = None, self.log_likelihoods(x, reduced)
        else:
            seen = self._seen_through_model_noise(reduced)
            mu, ll = self._dirac(x, seen)
        ll = self._global(ll).double().to(prior.device)
        if self.skip_identical and is_uniform(prior) and self._identical(x):
            # all particles equal (first step from one initial state): equal weights
            source = self._take(x, torch.arange(N))
            fields = dict(
                ess=float(N),
                log_evidence=float(torch.logsumexp(prior.double() + ll, 0)),
                ess_untempered=float(N),
                skipped_weights=True,
                unique_ancestors=N,
            )
            if mu is not None:
                fields["extra"] = {"inflation_min": 1.0, "ess_min": float(N), "seams": 0.0}
        elif mu is not None:
            # 2–3. per-point inflation and resampling (docs/method.md#localised-weights)
            source, fields = self._local_resample(x, mu, prior, seen)
            fields["log_evidence"] = float(torch.logsumexp(prior.double() + ll, 0))
        else:
            # 2. inflation to the ESS interval; 3. ancestors by resampling
            rw = reweight(prior, ll, self.ess_interval, who="FAAPF")
            anc = resample(rw.log_weights, self.resampling, generator=self.generator)
            source = self._take(x, anc)
            fields = dict(**rw.diagnostics(), unique_ancestors=int(torch.unique(anc).numel()))
        # 4. the optimal proposal, guided with the un-inflated observation noise
        new = self._emulator().sample_posterior(source, reduced, generator=self.generator)
        info = StepInfo(**fields, resampled=True)
        if adaptive:  # the model noise's bandwidth h_k
            info.extra["jitter_scale"] = float(em.last_scale)
        info.seconds = time.perf_counter() - t0
        return Ensemble(new, self._local(uniform_log_weights(N))), info

    def _local_resample(
        self, x: Tensor, mu: Tensor, prior: Tensor, obs: Observation
    ) -> tuple[Tensor, dict]:
        """Localised weights, per-point inflation and local systematic resampling: the
        patched particles and the :class:`StepInfo` fields (means over the grid points)."""
        N = prior.shape[0]
        rho = localisation_weights(obs, tuple(x.shape[1:]), self.localization, self.periodic)
        L = local_log_likelihoods(mu, obs, rho)  # (N, P)
        lw_prior = torch.log_softmax(prior.double(), 0)
        if self.ess_interval is None:
            beta = torch.ones(L.shape[1], dtype=torch.float64)
            ess = ess1 = column_ess(lw_prior[:, None] + L)
            met = None
        else:
            lo, hi = (max(1.0, f * N) for f in self.ess_interval)
            beta, ess, ess1 = local_inflation(L, lo, hi, prior=lw_prior)
            met = bool(((ess >= lo - 1e-9) & (ess <= hi + 1e-9) | (beta == 1)).all())
        u = torch.rand(1, dtype=torch.float64, generator=self.generator)
        anc = local_ancestors(lw_prior[:, None] + beta * L, u)  # (N, P), sorted per column
        flat = x.reshape(N, -1)
        patched = flat.gather(0, anc.to(flat.device)).reshape(x.shape)
        unique = 1 + (anc[1:] != anc[:-1]).sum(0)
        return patched, dict(
            ess=float(ess.mean()),
            inflation=float(beta.mean()),
            ess_untempered=float(ess1.mean()),
            target_met=met,
            unique_ancestors=round(float(unique.double().mean())),
            extra={
                "inflation_min": float(beta.min()),
                "ess_min": float(ess.min()),
                # share of neighbouring points (in flattening order) whose ancestors differ
                "seams": float((anc[:, 1:] != anc[:, :-1]).double().mean()),
            },
        )

    def _identical(self, x: Tensor) -> bool:
        if self.sharding is None:
            return bool((x == x[:1]).all())
        return self.sharding.all_identical(x)

    def _take(self, x: Tensor, ancestors: Tensor) -> Tensor:
        """``x[ancestors]`` (this rank's block of it when sharded)."""
        return x[ancestors] if self.sharding is None else self.sharding.take(x, ancestors)

    def _forecast(self, ensemble: Ensemble, prior: Tensor, t0: float) -> tuple[Ensemble, StepInfo]:
        """No observed value: draw ancestors if weighted, then propagate."""
        N = prior.shape[0]
        if is_uniform(prior):
            anc = torch.arange(N)
        else:
            anc = resample(prior, self.resampling, generator=self.generator)
        new = self._emulator().sample(self._take(ensemble.particles, anc), generator=self.generator)
        info = StepInfo(ess=effective_sample_size(prior), seconds=time.perf_counter() - t0)
        return Ensemble(new, self._local(uniform_log_weights(N))), info
