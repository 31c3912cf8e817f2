r"""FA-APF's weights, measured directly: how far the ``"dirac"`` and ``"gaussian"``
approximations of the predictive likelihood :math:`p(y \mid x_i^k)`, and the emulator's own
Monte-Carlo estimate of it, put the normalised weights of a particle cloud from the exact
ones (docs/method.md#fa-apf-weights).

For a true state :math:`x^k`, a cloud of particles
:math:`x_i^k = x^k + s\,\varepsilon_i` (``particles`` of them, :math:`s` about the filter's
posterior spread) and the observation :math:`y` of a true next state, the exact weights are

.. math:: w_i \propto \hat p(y \mid x_i^k) = \frac1L \sum_{l=1}^{L}
    \mathcal{N}(y; H(x'_{il}), \Sigma_y), \quad x'_{il} \sim p(\cdot \mid x_i^k)

with ``draws`` :math:`L` true-model transitions per particle.  A second, independent set of
:math:`L` draws gives the Monte-Carlo floor of the comparison: the distance between two
exact estimates.  Each approximation :math:`a` is scored by the total-variation distance
:math:`\tfrac12 \sum_i |w_i^a - w_i|` (0: the same weights; 1: disjoint), by the shift of the
weighted mean :math:`|\sum_i (w^a_i - w_i) x_i^k|` in units of :math:`s` (per component), and
by the effective sample size :math:`1/\sum_i (w^a_i)^2` against the exact weights' one.  The
rows ``"dirac, ESS interval"`` temper the dirac log-weights as FA-APF does
(:func:`~genfilter.filters.weighting.reweight`), so that the row measures the weights
the filter resamples with; ``"emulator MC"`` is the ``"exact"`` option of
:class:`~genfilter.filters.FAAPF` on the emulator, which separates what the emulator costs
from what the dirac and gaussian approximations cost.
"""

from __future__ import annotations

__all__ = [
    "CLOUD_SPREAD",
    "FAMILIES",
    "WeightsReport",
    "exact_log_likelihoods",
    "weights_diagnostic",
    "l63_weights_study",
    "format_weights_study",
]

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._utils import check_count, make_generator
from ..observations import Observation

CLOUD_SPREAD = {"a": 0.329, "b": 1.413, "c": 0.442, "d": 2.768}
"""Setup letter -> sd of the particle cloud around the true state: the Bayes limit's mean
spread on that setup (Table 1 of docs/results/l63.md), so that the cloud is about as wide
as a good filter's posterior."""

FAMILIES = ("diffusion", "diffusion-fixed-point", "interpolant")
"""The shipped emulators :func:`l63_weights_study` compares: the diffusion emulator with the
paper's predictive mean (one denoiser call at t = 1), the same with the fixed-point mean
(:data:`~genfilter.experiments.l63_results.FIXED_POINT_MEAN`), and the interpolant."""

KINDS = ("dirac", "dirac, ESS interval", "gaussian", "emulator MC")
"""The weights compared, in the order of the report's rows."""


def exact_log_likelihoods(
    system,
    particles: Tensor,
    obs: Observation,
    draws: int,
    generator: torch.Generator,
    chunk: int = 50_000,
) -> Tensor:
    r"""Monte-Carlo :math:`\log \hat p(y \mid x_i)` ``(N,)`` from ``draws`` true-model
    transitions of every particle of ``particles (N, *S)``."""
    N = particles.shape[0]
    flat = particles.repeat_interleave(draws, dim=0)
    lls = []
    for start in range(0, flat.shape[0], chunk):
        x = system.step(flat[start : start + chunk].clone(), 1, generator)
        lls.append(obs.log_likelihood(x.double()))
    ll = torch.cat(lls).reshape(N, draws)
    return torch.logsumexp(ll, dim=1) - math.log(draws)


@dataclass
class WeightsReport:
    """Means over the pairs, per kind of weights (:data:`KINDS` and ``"exact, 2nd draw"``,
    the Monte-Carlo floor)."""

    total_variation: dict[str, float]
    mean_shift: dict[str, Tensor]  # (D,) mean over pairs of |weighted-mean shift| / spread
    ess: dict[str, float]  # mean over pairs of the ESS of the normalised weights
    pairs: int
    particles: int
    draws: int
    spread: float


def _normalised(log_w: Tensor) -> Tensor:
    return torch.softmax(log_w.double(), 0)


def weights_diagnostic(
    emulator,
    system,
    states: Tensor,
    make_observation: Callable[[Tensor], Observation],
    *,
    spread: float,
    particles: int = 64,
    draws: int = 1000,
    emulator_draws: int = 256,
    ess_interval: tuple[float, float] = (50 / 256, 60 / 256),
    generator: torch.Generator | int | None = 0,
    progress: bool = True,
) -> WeightsReport:
    """Compares FA-APF's weights on ``emulator`` with the exact ones around each of
    ``states (P, *S)`` (module docstring); ``make_observation(x_true (*S))`` returns the
    observation of a true next state (its noise drawn inside)."""
    from ..filters.fa_apf import FAAPF
    from ..filters.weighting import reweight

    check_count(particles, "particles", minimum=2)
    check_count(draws, "draws", minimum=1)
    check_count(emulator_draws, "emulator_draws", minimum=1)
    if not (isinstance(spread, (int, float)) and spread > 0 and math.isfinite(spread)):
        raise ValueError(f"spread must be a positive number, got {spread!r}")
    g = make_generator(generator)
    kinds = (*KINDS, "exact, 2nd draw")
    tv = {k: [] for k in kinds}
    shift = {k: [] for k in kinds}
    ess = {k: [] for k in (*kinds, "exact")}
    dirac_filter = FAAPF(emulator, weights="dirac", ess_interval=ess_interval, generator=g)
    gaussian_filter = FAAPF(emulator, weights="gaussian", generator=g)
    mc_filter = FAAPF(emulator, weights="exact", exact_samples=emulator_draws, generator=g)
    uniform = torch.zeros(particles, dtype=torch.float64)
    for x in tqdm(states, disable=not progress, desc="weight pairs", unit="pair"):
        x_true = system.step(x[None].clone(), 1, g)[0]
        obs = make_observation(x_true)
        cloud = x + spread * torch.randn(
            (particles, *x.shape), generator=g, dtype=torch.float64
        ).to(x.dtype)
        exact = exact_log_likelihoods(system, cloud, obs, draws, g)
        logs = {"exact, 2nd draw": exact_log_likelihoods(system, cloud, obs, draws, g)}
        logs["dirac"] = dirac_filter.log_likelihoods(cloud, obs)
        logs["dirac, ESS interval"] = reweight(
            uniform, logs["dirac"], dirac_filter.ess_interval, who="weights check"
        ).log_weights  # tempered as the filter tempers them
        logs["gaussian"] = gaussian_filter.log_likelihoods(cloud, obs)
        logs["emulator MC"] = mc_filter.log_likelihoods(cloud, obs)
        w = _normalised(exact)
        ess["exact"].append(float(1 / (w**2).sum()))
        flat = cloud.double().flatten(1)
        for k in kinds:
            wa = _normalised(logs[k])
            tv[k].append(float(0.5 * (wa - w).abs().sum()))
            shift[k].append(((wa - w) @ flat).abs() / spread)
            ess[k].append(float(1 / (wa**2).sum()))
    return WeightsReport(
        total_variation={k: sum(v) / len(v) for k, v in tv.items()},
        mean_shift={k: torch.stack(v).mean(0) for k, v in shift.items()},
        ess={k: sum(v) / len(v) for k, v in ess.items()},
        pairs=int(states.shape[0]),
        particles=particles,
        draws=draws,
        spread=float(spread),
    )


def l63_weights_study(
    setups=("a", "b", "c", "d"),
    families=("diffusion",),
    pairs: int = 30,
    particles: int = 64,
    draws: int = 1000,
    emulator_draws: int = 256,
    seed: int = 123,
    progress: bool = True,
) -> dict[tuple[str, str], WeightsReport]:
    """The weights check on stochastic Lorenz-63 with the shipped emulators: ``pairs``
    attractor states (the same for every variant), for each observation setup (noise std
    0.25; the cloud's sd from :data:`CLOUD_SPREAD`) and each of :data:`FAMILIES`."""
    from .l63 import load_shipped_emulator
    from .l63_results import FIXED_POINT_MEAN
    from .proposal import l63_attractor_states, l63_setup_pairs

    for family in families:
        if family not in FAMILIES:
            raise ValueError(f"families entries must be among {list(FAMILIES)}, got {family!r}")
    states = l63_attractor_states(pairs, seed)
    out = {}
    for setup in setups:
        for family in families:
            system, observe = l63_setup_pairs(setup, seed + 1)
            if family == "diffusion-fixed-point":
                em = load_shipped_emulator(system.interval, **FIXED_POINT_MEAN)
            else:
                em = load_shipped_emulator(system.interval, family=family)
            out[(setup, family)] = weights_diagnostic(
                em,
                system,
                states,
                observe,
                spread=CLOUD_SPREAD[setup],
                particles=particles,
                draws=draws,
                emulator_draws=emulator_draws,
                generator=seed + 2,
                progress=progress,
            )
    return out


def format_weights_study(results: dict[tuple[str, str], WeightsReport]) -> str:
    """Markdown table of :func:`l63_weights_study`: one row per setup, emulator and kind."""
    lines = [
        "| setup | emulator | weights | total variation to exact | weighted-mean shift / s "
        "(x1, x2, x3) | ESS (exact's) |",
        "|---|---|---|---|---|---|",
    ]
    for (setup, family), r in results.items():
        for k in (*KINDS, "exact, 2nd draw"):
            s = ", ".join(f"{v:.3f}" for v in r.mean_shift[k].tolist())
            lines.append(
                f"| ({setup}) | {family} | {k} | {r.total_variation[k]:.3f} | {s} | "
                f"{r.ess[k]:.1f} ({r.ess['exact']:.1f}) |"
            )
    return "\n".join(lines)
