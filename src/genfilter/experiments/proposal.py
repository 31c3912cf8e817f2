r"""Proposal quality, measured directly: the MMPS optimal proposal of a learned emulator
is tested on its own, not only through the filter's scores (docs/method.md#optimal-proposal,
docs/method.md#projected-covariance).

For a system whose true transition can be sampled, the exact optimal proposal
:math:`p(x^{k+1} \mid x^k, y) \propto p(y \mid x^{k+1})\, p(x^{k+1} \mid x^k)` is approximated
by importance-weighting many true-model draws from :math:`x^k` with the likelihood.  Its
weighted mean and variance are compared with those of the emulator's MMPS proposal
(``emulator.sample_posterior``) over many :math:`(x^k, y)` pairs, where :math:`y` is drawn
from a true next state as in a twin experiment.

Reported per component: the mean error in units of the exact proposal's standard deviation,
and the variance ratio emulator / exact (geometric mean over pairs, so that over- and
under-dispersion weigh alike), with the ESS of the importance weights (the reference is only
trustworthy when it is large).
"""

from __future__ import annotations

__all__ = [
    "ProposalReport",
    "exact_proposal_moments",
    "proposal_diagnostic",
    "format_report",
    "l63_proposal_study",
    "format_study",
]

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .._utils import make_generator
from ..observations import Observation


def exact_proposal_moments(
    system,
    x_prev: Tensor,
    obs: Observation,
    draws: int = 100_000,
    generator: torch.Generator | None = None,
    chunk: int = 20_000,
) -> tuple[Tensor, Tensor, float]:
    """Importance-sampling estimate of the optimal proposal's mean and variance ``(*S)`` and
    the ESS of the weights, from ``draws`` true-model transitions of ``x_prev (*S)``."""
    samples, logw = [], []
    for start in range(0, draws, chunk):
        n = min(chunk, draws - start)
        x = system.step(x_prev.expand(n, *x_prev.shape).clone(), 1, generator)
        samples.append(x)
        logw.append(obs.log_likelihood(x.double()))
    x = torch.cat(samples).double()
    lw = torch.cat(logw)
    w = torch.softmax(lw, 0)
    mean = torch.einsum("n,n...->...", w, x)
    var = torch.einsum("n,n...->...", w, (x - mean) ** 2)
    ess = float(1.0 / (w**2).sum())
    return mean, var, ess


@dataclass
class ProposalReport:
    mean_error: Tensor  # (D,) mean over pairs of |m_em − m_exact| / sd_exact
    variance_ratio: Tensor  # (D,) geometric mean over pairs of var_em / var_exact
    worst_mean_error: Tensor  # (D,) max over pairs
    min_ess: float
    pairs: int
    samples: int
    draws: int
    off_attractor: float  # fraction of emulator samples farther than 5 exact sd from the exact mean


def proposal_diagnostic(
    emulator,
    system,
    states: Tensor,
    make_observation: Callable[[Tensor], Observation],
    *,
    samples: int = 256,
    draws: int = 100_000,
    generator: torch.Generator | int | None = 0,
    progress: bool = True,
) -> ProposalReport:
    """Compares ``emulator.sample_posterior`` with the exact optimal proposal from each of
    ``states (P, *S)``; ``make_observation(x_true (*S))`` returns the observation of a true
    next state (its noise drawn inside)."""
    g = make_generator(generator)
    errs, logratios, far = [], [], []
    min_ess = math.inf
    for x in tqdm(states, disable=not progress, desc="proposal pairs", unit="pair"):
        x_true = system.step(x[None].clone(), 1, g)[0]
        obs = make_observation(x_true)
        m, v, ess = exact_proposal_moments(system, x, obs, draws=draws, generator=g)
        min_ess = min(min_ess, ess)
        em = emulator.sample_posterior(
            x.expand(samples, *x.shape).clone(), obs, generator=g
        ).double()
        sd = v.clamp_min(1e-12).sqrt()
        errs.append((em.mean(0) - m).abs() / sd)
        logratios.append(torch.log(em.var(0).clamp_min(1e-300) / v.clamp_min(1e-300)))
        far.append(float(((em - m).abs() > 5 * sd).flatten(1).any(1).double().mean()))
    E = torch.stack(errs).flatten(1)
    R = torch.stack(logratios).flatten(1)
    return ProposalReport(
        mean_error=E.mean(0),
        variance_ratio=R.mean(0).exp(),
        worst_mean_error=E.max(0).values,
        min_ess=min_ess,
        pairs=int(states.shape[0]),
        samples=samples,
        draws=draws,
        off_attractor=float(sum(far) / len(far)),
    )


def format_report(name: str, r: ProposalReport) -> str:
    """One markdown row per component."""
    lines = []
    for d in range(r.mean_error.numel()):
        lines.append(
            f"| {name} | x{d + 1} | {r.mean_error[d]:.3f} | {r.worst_mean_error[d]:.2f} | "
            f"{r.variance_ratio[d]:.3f} | {r.off_attractor:.3f} | {r.min_ess:.0f} |"
        )
    return "\n".join(lines)


def l63_attractor_states(pairs: int, seed: int) -> Tensor:
    """``pairs`` stochastic Lorenz-63 attractor states ``(pairs, 3)`` (float32), the same for
    every setup and variant of a study."""
    from ..systems.lorenz63 import StochasticLorenz63

    g = torch.Generator().manual_seed(seed)
    return StochasticLorenz63().attractor_states(pairs, generator=g).float()


def l63_setup_pairs(setup: str, seed: int) -> tuple[Any, Callable[[Tensor], Observation]]:
    """The system of Lorenz-63 setup ``setup`` (a letter) and the function that observes a
    true next state as that setup does (noise from a generator seeded with ``seed``)."""
    from ..observations import Select, isotropic_noise
    from ..systems.lorenz63 import StochasticLorenz63
    from .setups import get_setup

    named = get_setup(f"l63-{setup}", "setup")
    system = StochasticLorenz63(**named.system_options)
    op, std = Select(named.observations["indices"]), float(named.observations["noise_std"])
    g_obs = torch.Generator().manual_seed(seed)

    def observe(x_true: Tensor) -> Observation:
        hx = op(x_true[None])[0]
        y = hx + std * torch.randn(hx.shape, generator=g_obs, dtype=hx.dtype)
        return Observation(y, op, isotropic_noise(std))

    return system, observe


def l63_proposal_study(
    setups=("a", "b"),
    covariances=("tweedie", "projected"),
    pairs: int = 30,
    samples: int = 256,
    draws: int = 50_000,
    seed: int = 123,
    progress: bool = True,
    emulator_options: dict | None = None,
) -> dict[tuple[str, str], ProposalReport]:
    """The proposal check (docs/method.md#optimal-proposal) on stochastic Lorenz-63 with the
    shipped emulator:
    ``pairs`` attractor states :math:`x^k` (the same for every variant), for each observation
    setup (``"a"``: x1, x3; ``"b"``: x1; noise std 0.25) and each guidance covariance."""
    from .l63 import load_shipped_emulator

    states = l63_attractor_states(pairs, seed)
    out = {}
    for setup in setups:
        for cov in covariances:
            system, observe = l63_setup_pairs(setup, seed + 1)
            em = load_shipped_emulator(system.interval, covariance=cov, **(emulator_options or {}))
            out[(setup, cov)] = proposal_diagnostic(
                em,
                system,
                states,
                observe,
                samples=samples,
                draws=draws,
                generator=seed + 2,
                progress=progress,
            )
    return out


def format_study(results: dict[tuple[str, str], ProposalReport]) -> str:
    """Markdown table of :func:`l63_proposal_study`."""
    lines = [
        "| setup | guidance covariance | component | mean error / sd (mean) | (worst) | "
        "variance ratio | off-attractor fraction | min reference ESS |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for (setup, cov), r in results.items():
        for d in range(r.mean_error.numel()):
            lines.append(
                f"| ({setup}) | {cov} | x{d + 1} | {r.mean_error[d]:.3f} | "
                f"{r.worst_mean_error[d]:.2f} | {r.variance_ratio[d]:.3f} | "
                f"{r.off_attractor:.3f} | {r.min_ess:.0f} |"
            )
    return "\n".join(lines)
