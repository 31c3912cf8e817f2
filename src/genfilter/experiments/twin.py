r"""Twin experiments: a system, an observation model and a time sequence (DAPPER's habit;
STYLE.md).

A *twin experiment* draws a true trajectory :math:`x^{1:K}` from a known system, observes
it, :math:`y^k = H(x^k) + \varepsilon^k`, :math:`\varepsilon^k \sim \mathcal{N}(0,
\sigma_y^2 I)` (SPEC §1), and runs filters on :math:`y^{1:K}` with the *same* system as the
forecast model ("perfect model").  Every filter is scored by the same functions
(:mod:`genfilter.metrics`, SPEC §6), averaged over the cycles after a burn-in.

- :class:`TwinSetup` describes one experiment: system, observation operator, noise std,
  number of cycles, burn-in, initial-ensemble recipe.
- :func:`make_twin` draws the truth, the observations and the initial ensembles for a seed
  (cached: every filter of a sweep sees the same data for a given seed — common random
  numbers, so differences between filters are not sampling noise of the twin).
- :func:`run_twin` runs one filter on one twin and returns the summary (skill, spread, SSR,
  CRPS after burn-in, seconds, ``diverged``); an exception is recorded, not raised, so a
  sweep never stops on one bad configuration.
- :func:`climatology` estimates the climatological mean and standard deviation of a system
  (used to normalise EnSF / EnFF, for the ``diverged`` flag and as a reference row).

Deterministic Lorenz-63 (``StochasticLorenz63(epsilon=0)``) is integrated by
:class:`DeterministicLorenz63`, a numpy Euler loop that is *bit-identical* to the
system's own ε = 0 Milstein step through torchsde (checked in the tests) and ~15× faster
(1.2 ms instead of 18 ms per 0.25 time units on one core) — the whole difference between
a 30-minute and a 5-hour baseline table.
"""

from __future__ import annotations

__all__ = [
    "TwinSetup",
    "Twin",
    "Climatology",
    "DeterministicLorenz63",
    "Jittered",
    "emulator_for",
    "climatology",
    "make_twin",
    "run_twin",
    "run_climatology",
    "lorenz63_setup",
    "lorenz96_setup",
]

import dataclasses
import functools
import math
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .._utils import make_generator
from ..filters.base import Filter, assimilate
from ..metrics import crps as crps_metric
from ..observations import (
    Identity,
    Observation,
    ObservationOperator,
    Select,
    isotropic_noise,
    synthetic_observations,
)
from ..systems.lorenz63 import StochasticLorenz63
from ..systems.lorenz96 import Lorenz96

FilterFactory = Callable[[Any, torch.Generator], Filter]
"""``factory(emulator, generator) -> Filter``: builds a fresh filter for one run."""

_INIT_RECIPES = ("perturbed", "climatology")


# ------------------------------------------------------------------------------ setups


@dataclass(frozen=True, eq=False)
class TwinSetup:
    r"""One twin experiment (DAPPER's "hidden Markov model": dynamics + observation model +
    time sequence).

    Attributes:
        name: A short label used in tables.
        system: A :class:`~genfilter.emulators.simulator.StochasticSystem` (``state_shape``,
            ``interval``, ``step``, ``trajectory``, ``attractor_states``, ``as_emulator``);
            it is both the truth and the filters' forecast model.
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


def lorenz63_setup(cycles: int = 500, burn_in: int = 100, **kw) -> TwinSetup:
    r"""The Lorenz-63 baseline twin: *deterministic* Lorenz-63 (σ, ρ, β = 10, 28, 8/3;
    ``StochasticLorenz63(epsilon=0.0, interval=0.25)``, i.e. Euler steps of 10⁻³), x1 and
    x3 observed with noise std 1 every 0.25 time units; initial ensemble = truth's initial
    state + N(0, 2² I)."""
    kw.setdefault("init_std", 2.0)
    return TwinSetup(
        name="lorenz63",
        system=StochasticLorenz63(epsilon=0.0, interval=0.25),
        operator=Select([0, 2]),
        noise_std=1.0,
        cycles=cycles,
        burn_in=burn_in,
        spinup=kw.pop("spinup", 10.0),
        description=(
            "deterministic Lorenz-63 (StochasticLorenz63(epsilon=0.0, interval=0.25): Euler, "
            "dt 1e-3), x1 and x3 observed, noise std 1, every 0.25 time units"
        ),
        **kw,
    )


def lorenz96_setup(cycles: int = 500, burn_in: int = 100, **kw) -> TwinSetup:
    r"""The Lorenz-96 baseline twin: deterministic Lorenz-96 (D = 40, F = 8, RK4 dt 0.01;
    ``Lorenz96(interval=0.05)``), all 40 components observed with noise std 1 every 0.05
    time units; initial ensemble = truth's initial state + N(0, I)."""
    return TwinSetup(
        name="lorenz96",
        system=Lorenz96(interval=0.05),
        operator=Identity(),
        noise_std=1.0,
        cycles=cycles,
        burn_in=burn_in,
        description=(
            "deterministic Lorenz-96 (Lorenz96(interval=0.05): D 40, F 8, RK4 dt 0.01), all "
            "40 observed, noise std 1, every 0.05 time units"
        ),
        **kw,
    )


# -------------------------------------------------------------------------- emulators


class DeterministicLorenz63:
    r"""Deterministic Lorenz-63 transition (``StochasticLorenz63`` with ε = 0) in numpy.

    With ε = 0 the system's Milstein step reduces to Euler,
    :math:`x \leftarrow x + f(x)\,\Delta t`, repeated ``interval / dt`` times; this loop
    computes it with the same floating-point operations as
    :func:`~genfilter.systems.lorenz63.lorenz63_drift` (bit-identical results, tested) but
    without torchsde's per-step overhead.  ``generator`` is accepted and unused.
    """

    def __init__(self, system: StochasticLorenz63) -> None:
        if float(system.epsilon) != 0.0:
            raise ValueError(f"DeterministicLorenz63 needs epsilon == 0, got {system.epsilon}")
        self.system = system
        self.state_shape = (3,)

    def __repr__(self) -> str:
        return f"DeterministicLorenz63({self.system!r})"

    def sample(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        r"""One snapshot interval of every member, ``(N, 3) -> (N, 3)``."""
        if x_prev.ndim != 2 or x_prev.shape[1] != 3:
            raise ValueError(f"x_prev must have shape (N, 3), got {tuple(x_prev.shape)}")
        s = self.system
        sigma, rho, beta, dt = s.sigma, s.rho, s.beta, s.dt
        x = x_prev.detach().cpu().double().numpy()
        a, b, c = x[:, 0].copy(), x[:, 1].copy(), x[:, 2].copy()
        # a member thrown far off the attractor by a bad analysis may overflow: it then
        # becomes inf / NaN, which assimilate() reports as an error (no numpy warnings)
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(s.steps_per_interval):
                da = sigma * (b - a)
                db = a * (rho - c) - b
                dc = a * b - beta * c
                a, b, c = a + dt * da, b + dt * db, c + dt * dc
        out = torch.from_numpy(np.stack([a, b, c], axis=1))
        return out.to(dtype=x_prev.dtype, device=x_prev.device)

    def predict_mean(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        return self.sample(x_prev)


class Jittered:
    r"""An emulator with additive Gaussian model noise: :math:`x^{k+1} = \Phi(x^k) + q\,\xi`,
    :math:`\xi \sim \mathcal{N}(0, I)` (in state units).

    The bootstrap particle filter with a deterministic model cannot separate the duplicates
    that resampling creates (SPEC_BASELINES §B1 pitfalls); the usual remedy is jitter —
    DAPPER's ``reg``, the EnFF authors' ``model_noise_std`` (§B1 table).  Wrapping the
    forecast model gives exactly the latter.  ``q`` must be tuned.
    """

    def __init__(self, emulator: Any, std: float) -> None:
        std = float(std)
        if not (math.isfinite(std) and std >= 0):
            raise ValueError(f"jitter std must be finite and >= 0, got {std}")
        self.emulator = emulator
        self.std = std
        self.state_shape = tuple(getattr(emulator, "state_shape", ()))

    def __repr__(self) -> str:
        return f"Jittered({self.emulator!r}, std={self.std})"

    def sample(self, x_prev: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        x = self.emulator.sample(x_prev, generator=generator)
        if self.std == 0.0:
            return x
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return x + self.std * noise.to(x.device)


def emulator_for(system: Any) -> Any:
    """The forecast model of a twin: the true system as an emulator, through
    :class:`DeterministicLorenz63` when the system is Lorenz-63 with ε = 0."""
    if isinstance(system, StochasticLorenz63) and float(system.epsilon) == 0.0:
        return DeterministicLorenz63(system)
    return system.as_emulator()


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
def _climatology(system: Any, trajectories: int, snapshots: int, seed: int, spinup: float,
                 dtype: torch.dtype) -> Climatology:
    g = torch.Generator().manual_seed(seed)
    x = _attractor(system, trajectories, g, spinup, dtype)
    states = _run(emulator_for(system), x, snapshots, g).reshape(-1, *system.state_shape)
    mean, std = states.mean(0), states.std(0)
    return Climatology(mean, std, float(std.pow(2).mean().sqrt()), states)


def climatology(setup: TwinSetup, trajectories: int = 64, snapshots: int = 200,
                seed: int = 123_456) -> Climatology:
    """Climatological statistics of ``setup.system`` from ``trajectories`` attractor runs of
    ``snapshots`` intervals each (cached per system; fixed seed, independent of every twin)."""
    return _climatology(setup.system, int(trajectories), int(snapshots), int(seed),
                        float(setup.spinup), setup.dtype)


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
    truth = _run(emulator_for(setup.system), x0, setup.cycles, g)[:, 0]
    observations = synthetic_observations(
        truth, setup.operator, isotropic_noise(setup.noise_std),
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


def _filter_seed(seed: int, n: int) -> int:
    return _sub_seeds(seed * 100_003 + n, 4)[3]


def run_twin(
    filter_factory: FilterFactory,
    setup: TwinSetup,
    N: int,
    seed: int,
    *,
    progress: bool = False,
    desc: str | None = None,
) -> dict[str, Any]:
    r"""Runs one filter on the twin ``make_twin(setup, seed)`` with ``N`` members.

    Arguments:
        filter_factory: ``factory(emulator, generator) -> Filter``; called once, with the
            twin's forecast model (:func:`emulator_for`) and a generator seeded from
            ``(seed, N)`` (so a run is reproducible and independent of other runs).
        setup, N, seed: The experiment, the ensemble size, the twin's seed.

    Returns:
        ``{"skill", "spread", "ssr", "crps"}`` averaged over cycles ``burn_in..K-1``
        (SPEC §6; ``ssr`` the mean of per-step ratios), ``"seconds"`` (wall time of the
        run), ``"diverged"`` (non-finite scores, an error, or skill above the
        climatological sd), ``"error"`` (``None`` or the exception as text; the run is
        then NaN, not raised), ``"N"``, ``"seed"``.
    """
    twin = make_twin(setup, seed)
    clim_sd = climatology(setup).sd
    out: dict[str, Any] = {"N": int(N), "seed": int(seed), "error": None}
    t0 = time.perf_counter()
    try:
        x0 = twin.initial_ensemble(N)
        generator = make_generator(_filter_seed(int(seed), int(N)))
        filt = filter_factory(emulator_for(setup.system), generator)
        run = assimilate(filt, x0, twin.observations, twin.truth, progress=progress,
                         save_particles=False, desc=desc)
        summary = run.summary(burn_in=setup.burn_in)
        for key in ("skill", "spread", "ssr", "crps"):
            out[key] = float(summary[key])
    except Exception as exc:  # noqa: BLE001 - a sweep records the failure and goes on
        for key in ("skill", "spread", "ssr", "crps"):
            out[key] = float("nan")
        last = traceback.extract_tb(exc.__traceback__)[-1]
        out["error"] = f"{type(exc).__name__}: {exc} ({last.filename.split('/')[-1]}:{last.lineno})"
    out["seconds"] = time.perf_counter() - t0
    finite = all(math.isfinite(out[k]) for k in ("skill", "spread", "crps"))
    out["diverged"] = bool(out["error"] is not None or not finite or out["skill"] > clim_sd)
    return out


def run_climatology(setup: TwinSetup, seed: int, members: int = 500) -> dict[str, Any]:
    r"""The climatology reference on the twin of ``seed``: the estimate is the
    climatological mean, the ensemble ``members`` fixed states of the climatological
    archive; same summary keys as :func:`run_twin`."""
    twin = make_twin(setup, seed)
    clim = climatology(setup)
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(7)
    ens = clim.archive[torch.randperm(clim.archive.shape[0], generator=g)[:members]]
    truth = twin.truth[setup.burn_in:].double()
    skill = (truth - clim.mean.double()).pow(2).flatten(1).mean(1).sqrt()
    spread = float(clim.std.double().pow(2).mean().sqrt())
    crps = torch.stack([crps_metric(ens, x) for x in truth]).double()
    return {
        "N": members, "seed": int(seed), "error": None,
        "skill": float(skill.mean()), "spread": spread, "ssr": float((spread / skill).mean()),
        "crps": float(crps.mean()), "seconds": time.perf_counter() - t0, "diverged": False,
    }
