r"""Twin experiments: a system, an observation model and a time sequence (DAPPER's habit).

A *twin experiment* draws a true trajectory :math:`x^{1:K}` from a known system, observes
it, :math:`y^k = H(x^k) + \varepsilon^k`, :math:`\varepsilon^k \sim \mathcal{N}(0,
\sigma_y^2 I)` (docs/method.md#the-filtering-problem), and runs filters on
:math:`y^{1:K}`.  Every filter is scored by the same functions (:mod:`genfilter.metrics`),
averaged over the cycles after a burn-in.

- :class:`TwinSetup` describes one experiment: system, observation operator, noise std,
  number of cycles, burn-in, initial-ensemble recipe (built from a config by
  :func:`~genfilter.experiments.runner.build_twin_setup`; the named setups are in
  :mod:`genfilter.experiments.setups`).
- :func:`make_twin` draws the truth, the observations and the initial ensembles for a seed
  (cached: every filter of a sweep sees the same data for a given seed — common random
  numbers, so differences between filters are not sampling noise of the twin).
- :func:`climatology` estimates the climatological mean and standard deviation of a system
  (used to normalise EnSF / EnFF, for the ``diverged`` flag and as a reference row), and
  :func:`run_climatology` scores the climatological mean as an estimate.

The truth is drawn with the true model (:func:`~genfilter.emulators.simulator.true_model`).
"""

from __future__ import annotations

__all__ = [
    "TwinSetup",
    "Twin",
    "Climatology",
    "climatology",
    "make_twin",
    "run_climatology",
]

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..emulators.simulator import true_model
from ..metrics import crps as crps_metric
from ..observations import (
    Observation,
    ObservationOperator,
    isotropic_noise,
    synthetic_observations,
)

_INIT_RECIPES = ("perturbed", "climatology")


# ------------------------------------------------------------------------------ setups


@dataclass(frozen=True, eq=False)
class TwinSetup:
    r"""One twin experiment (DAPPER's "hidden Markov model": dynamics + observation model +
    time sequence).

    Attributes:
        name: A short label used in tables.
        system: A :class:`~genfilter.systems.base.StochasticSystem` (``state_shape``,
            ``interval``, ``step``, ``trajectory``, ``attractor_states``); the truth is drawn
            with its :func:`~genfilter.emulators.simulator.true_model`.
        operator: The observation operator :math:`H`.
        noise_std: :math:`\sigma_y` of the isotropic observation noise.
        cycles: Number :math:`K` of assimilation cycles (observations at steps 1..K, one
            snapshot interval apart).
        burn_in: Cycles left out of the scores (``0 <= burn_in < cycles``).
        init: Initial-ensemble recipe: ``"perturbed"`` — truth's initial state
            :math:`x^0` plus :math:`\mathcal{N}(0, \sigma_0^2 I)`; ``"climatology"`` — states
            drawn at random from the system's climatology (independent of the truth).
        init_std: :math:`\sigma_0` of the ``"perturbed"`` recipe.
        spinup: Time units the truth's initial state is run on the attractor first
            (passed to ``system.attractor_states(burn_in=...)``).
        dtype: Floating type of every state (float64 by default: the chaotic systems are
            compared with published numbers computed in double precision).
        description: Free text for tables (what is observed, how often, which model).

    Identity semantics (``eq=False``): two setups are the same only if they are the same
    object; :func:`make_twin` and :func:`climatology` cache on it.
    """

    name: str
    system: Any
    operator: ObservationOperator
    noise_std: float
    cycles: int
    burn_in: int
    init: str = "perturbed"
    init_std: float = 1.0
    spinup: float = 20.0
    dtype: torch.dtype = torch.float64
    description: str = ""

    def __post_init__(self) -> None:
        for attr in ("state_shape", "interval", "step", "attractor_states"):
            if not hasattr(self.system, attr):
                raise TypeError(f"TwinSetup.system must have {attr!r} (a StochasticSystem)")
        if not callable(self.operator):
            raise TypeError("TwinSetup.operator must be an observation operator (callable)")
        if not (math.isfinite(self.noise_std) and self.noise_std > 0):
            raise ValueError(f"TwinSetup.noise_std must be > 0, got {self.noise_std}")
        if isinstance(self.cycles, bool) or int(self.cycles) != self.cycles or self.cycles < 1:
            raise ValueError(f"TwinSetup.cycles must be an integer >= 1, got {self.cycles}")
        if int(self.burn_in) != self.burn_in or not 0 <= self.burn_in < self.cycles:
            raise ValueError(
                f"TwinSetup.burn_in must be an integer in [0, cycles = {self.cycles}), "
                f"got {self.burn_in}"
            )
        if self.init not in _INIT_RECIPES:
            raise ValueError(f"TwinSetup.init must be one of {_INIT_RECIPES}, got {self.init!r}")
        if not (math.isfinite(self.init_std) and self.init_std >= 0):
            raise ValueError(f"TwinSetup.init_std must be >= 0, got {self.init_std}")

    @property
    def state_shape(self) -> tuple[int, ...]:
        return tuple(self.system.state_shape)

    def with_cycles(self, cycles: int, burn_in: int) -> TwinSetup:
        """The same experiment with another time sequence (e.g. the short tuning twin).
        The climatology is shared (it depends on the system only)."""
        return dataclasses.replace(self, cycles=int(cycles), burn_in=int(burn_in))


# ------------------------------------------------------------------------- climatology


@dataclass(frozen=True)
class Climatology:
    r"""Climatological statistics of a system.

    Attributes:
        mean, std: Per-component mean and standard deviation ``(*S)``.
        sd: The scalar :math:`\sqrt{\mathrm{mean}_d\, \mathrm{std}_d^2}` — the expected RMSE
            of the climatological mean as an estimate (the ``diverged`` threshold).
        archive: Climatological states ``(M, *S)`` (for climatological ensembles).
    """

    mean: Tensor
    std: Tensor
    sd: float
    archive: Tensor


def _attractor(system: Any, n: int, generator: torch.Generator, spinup: float, dtype) -> Tensor:
    return system.attractor_states(n, generator, burn_in=spinup, dtype=dtype)


def _run(emulator: Any, x: Tensor, snapshots: int, generator=None) -> Tensor:
    """Snapshots ``x^1..x^K`` ``(K, N, *S)`` of ``emulator.sample`` from ``x`` ``(N, *S)``."""
    out = []
    with torch.no_grad():
        for _ in range(snapshots):
            x = emulator.sample(x, generator=generator)
            out.append(x)
    return torch.stack(out)


@functools.lru_cache(maxsize=16)
def _climatology(
    system: Any, trajectories: int, snapshots: int, seed: int, spinup: float, dtype: torch.dtype
) -> Climatology:
    g = torch.Generator().manual_seed(seed)
    x = _attractor(system, trajectories, g, spinup, dtype)
    states = _run(true_model(system), x, snapshots, g).reshape(-1, *system.state_shape)
    mean, std = states.mean(0), states.std(0)
    return Climatology(mean, std, float(std.pow(2).mean().sqrt()), states)


def climatology(
    setup: TwinSetup, trajectories: int = 64, snapshots: int = 200, seed: int = 123_456
) -> Climatology:
    """Climatological statistics of ``setup.system`` from ``trajectories`` attractor runs of
    ``snapshots`` intervals each (cached per system; fixed seed, independent of every twin)."""
    return _climatology(
        setup.system, int(trajectories), int(snapshots), int(seed), float(setup.spinup), setup.dtype
    )


# ------------------------------------------------------------------------------- twins


@dataclass(frozen=True)
class Twin:
    r"""The data of one twin experiment (unpacks as ``truth, observations, initial_ensemble``).

    Attributes:
        truth: True states ``(K, *S)`` at the observation times 1..K.
        observations: ``K`` :class:`~genfilter.observations.Observation` objects.
        initial_ensemble: ``initial_ensemble(N) -> (N, *S)``, the members at time 0, drawn
            by the setup's recipe; deterministic in ``(seed, N)`` (cached), so every filter
            of a sweep starts from the same members.
        initial_state: The truth's state :math:`x^0` ``(*S)`` at time 0.
    """

    truth: Tensor
    observations: list[Observation]
    initial_ensemble: Callable[[int], Tensor]
    initial_state: Tensor

    def __iter__(self):
        return iter((self.truth, self.observations, self.initial_ensemble))


def _sub_seeds(seed: int, n: int) -> list[int]:
    g = torch.Generator().manual_seed(int(seed))
    return [int(v) for v in torch.randint(0, 2**62, (n,), generator=g)]


@functools.lru_cache(maxsize=64)
def _make_twin(setup: TwinSetup, seed: int) -> Twin:
    s_truth, s_obs, s_init = _sub_seeds(seed, 3)
    g = torch.Generator().manual_seed(s_truth)
    x0 = _attractor(setup.system, 1, g, setup.spinup, setup.dtype)
    truth = _run(true_model(setup.system), x0, setup.cycles, g)[:, 0]
    observations = synthetic_observations(
        truth,
        setup.operator,
        isotropic_noise(setup.noise_std),
        generator=torch.Generator().manual_seed(s_obs),
    )

    @functools.lru_cache(maxsize=8)
    def initial_ensemble(n: int) -> Tensor:
        if isinstance(n, bool) or int(n) != n or n < 2:
            raise ValueError(f"ensemble size must be an integer >= 2, got {n}")
        gi = torch.Generator().manual_seed(s_init + int(n))
        if setup.init == "perturbed":
            eps = torch.randn((int(n), *setup.state_shape), generator=gi, dtype=setup.dtype)
            return x0[0] + setup.init_std * eps
        archive = climatology(setup).archive
        idx = torch.randperm(archive.shape[0], generator=gi)[: int(n)]
        return archive[idx].to(setup.dtype)

    return Twin(truth, observations, initial_ensemble, x0[0])


def make_twin(setup: TwinSetup, seed: int) -> Twin:
    r"""Draws the twin of ``setup`` for ``seed``: the truth ``(K, *S)`` (initial state on the
    attractor after ``setup.spinup`` time units, then ``K`` snapshot intervals of the true
    model), the observations :math:`y^k = H(x^k) + \sigma_y \varepsilon^k` and the initial
    ensemble sampler.  Truth, observations and initial ensembles use independent streams
    derived from ``seed``.  Cached on ``(setup, seed)`` (the tensors are shared: do not
    modify them in place)."""
    if isinstance(seed, bool) or int(seed) != seed or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    return _make_twin(setup, int(seed))


def run_climatology(setup: TwinSetup, seed: int, members: int = 500) -> dict[str, Any]:
    r"""The climatology reference on the twin of ``seed``: the estimate is the
    climatological mean, the ensemble ``members`` fixed states of the climatological
    archive; same summary keys as :func:`~genfilter.experiments.runner.run_summary`."""
    twin = make_twin(setup, seed)
    clim = climatology(setup)
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(7)
    ens = clim.archive[torch.randperm(clim.archive.shape[0], generator=g)[:members]]
    truth = twin.truth[setup.burn_in :].double()
    skill = (truth - clim.mean.double()).pow(2).flatten(1).mean(1).sqrt()
    spread = float(clim.std.double().pow(2).mean().sqrt())
    crps = torch.stack([crps_metric(ens, x) for x in truth]).double()
    return {
        "N": members,
        "seed": int(seed),
        "error": None,
        "skill": float(skill.mean()),
        "spread": spread,
        "ssr": float((spread / skill).mean()),
        "crps": float(crps.mean()),
        "seconds": time.perf_counter() - t0,
        "diverged": False,
    }
