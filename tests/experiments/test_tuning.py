"""Properties of the tuning helper (genfilter.experiments.tuning) and of run_twin's
bookkeeping, on a linear-Gaussian toy twin whose best hyperparameter is known in closed
form."""

from __future__ import annotations

import math

import pytest
import torch

from genfilter.emulators.simulator import StochasticSystem
from genfilter.experiments.tuning import (
    LogUniform,
    RandomSearch,
    TuningResult,
    Uniform,
    grid_configurations,
    tune,
)
from genfilter.experiments.twin import TwinSetup, climatology, make_twin, run_twin
from genfilter.filters.base import Ensemble, StepInfo, uniform_log_weights
from genfilter.observations import Identity

f64 = torch.float64
A, Q, R = 0.9, 1.0, 1.0  # x' = A x + N(0, Q) per component, y = x + N(0, R)


class AR1(StochasticSystem):
    """D independent AR(1) components: x' = A x + sqrt(Q) ξ."""

    interval = 1.0

    def __init__(self, dim: int = 8) -> None:
        self.state_shape = (dim,)

    def draw_noise(self, n, *, generator=None, dtype=torch.float32, device=None):
        return torch.randn((n, *self.state_shape), generator=generator, dtype=dtype, device=device)

    def advance(self, x, noise):
        return A * x + math.sqrt(Q) * noise

    def attractor_states(self, n, generator=None, *, burn_in=0.0, dtype=torch.float32,
                         chunk_size=None):
        sd = math.sqrt(Q / (1 - A**2))  # the stationary law
        return sd * torch.randn((n, *self.state_shape), generator=generator, dtype=dtype)


class FixedGainNudging:
    """Toy filter: m ← A m + gain (y − A m) applied to every member (H = I)."""

    def __init__(self, gain: float, generator=None) -> None:
        if gain < 0:
            raise ValueError(f"gain must be >= 0, got {gain}")
        self.gain, self.generator = gain, generator

    def init(self, particles):
        return Ensemble(particles.clone(), uniform_log_weights(particles.shape[0]))

    def step(self, ensemble, obs):
        xf = A * ensemble.particles
        xa = xf + self.gain * (obs.y - xf)
        return Ensemble(xa, ensemble.log_weights), StepInfo(ess=float(ensemble.size))


def stationary_error_var(g: float) -> float:
    """Per-component stationary error variance of the fixed-gain filter:
    e' = (1 − g)(A e − w) + g v  ⇒  var = ((1 − g)² Q + g² R) / (1 − (1 − g)² A²)."""
    return ((1 - g) ** 2 * Q + g**2 * R) / (1 - (1 - g) ** 2 * A**2)


def kalman_gain() -> float:
    """Steady-state Kalman gain of the scalar model (Riccati: P² − (A² − 1 + ... ) = 0)."""
    P = 1.0
    for _ in range(200):
        P = A**2 * P * R / (P + R) + Q
    return P / (P + R)


@pytest.fixture(scope="module")
def toy() -> TwinSetup:
    return TwinSetup(name="ar1", system=AR1(), operator=Identity(), noise_std=math.sqrt(R),
                     cycles=400, burn_in=50, init_std=1.0)


def nudging_factory(params):
    return lambda emulator, generator: FixedGainNudging(params["gain"], generator)


# ------------------------------------------------------------------ finds the optimum


def test_grid_tuning_finds_the_steady_state_kalman_gain(toy):
    """The fixed-gain filter's RMSE is minimal at the steady-state Kalman gain (0.597 for
    A = 0.9, Q = R = 1); the grid search over 0.2..1.0 picks 0.6, and every configuration's
    mean RMSE matches the closed-form stationary error within 8 % (E sqrt(χ²₈/8) ≈ 0.97
    explains most of the small low bias)."""
    assert kalman_gain() == pytest.approx(0.597, abs=1e-3)
    grid = {"gain": [0.2, 0.4, 0.6, 0.8, 1.0]}
    result = tune(nudging_factory, grid, toy, N=2, seeds=(10_000, 10_001), cycles=400,
                  burn_in=50, label="nudging")
    assert result.best_params == {"gain": 0.6}
    for trial in result.trials:
        theory = math.sqrt(stationary_error_var(trial.params["gain"]))
        assert trial.mean == pytest.approx(0.97 * theory, rel=0.08), trial.params
        assert trial.failed == 0 and trial.diverged == 0
        assert math.isfinite(trial.sem) and trial.sem > 0
    # ranking follows the theory at the two ends of the curve
    ranked = [t.params["gain"] for t in result.ranked]
    assert ranked[0] == 0.6 and ranked[-1] == 0.2


def test_tuning_uses_the_short_training_twin_not_the_evaluation_twin(toy):
    """tune() runs on setup.with_cycles(cycles, burn_in) with its own seeds: the twins it
    draws are those of the training seeds (different truth from evaluation seed 0)."""
    result = tune(nudging_factory, {"gain": [0.5]}, toy, N=2, seeds=(10_000,), cycles=60,
                  burn_in=10)
    assert (result.cycles, result.burn_in, result.seeds) == (60, 10, (10_000,))
    run = result.trials[0].runs[0]
    assert run["seed"] == 10_000
    short = toy.with_cycles(60, 10)
    assert not torch.equal(make_twin(short, 10_000).truth[:60], make_twin(toy, 0).truth[:60])
    # default burn-in of the short twin: min(setup.burn_in, cycles // 4)
    assert tune(nudging_factory, {"gain": [0.5]}, toy, 2, (10_000,), cycles=40).burn_in == 10


# -------------------------------------------------------------------- random search


def test_random_search_is_reproducible_for_a_seed_and_stays_in_range():
    space = {"gain": Uniform(0.1, 0.9), "scale": LogUniform(1e-3, 1.0), "path": ["f2p", "ot"]}
    a = RandomSearch(space, samples=8, seed=3).configurations()
    b = RandomSearch(space, samples=8, seed=3).configurations()
    c = RandomSearch(space, samples=8, seed=4).configurations()
    assert a == b
    assert a != c
    assert len(a) == 8
    for cfg in a:
        assert 0.1 <= cfg["gain"] <= 0.9
        assert 1e-3 <= cfg["scale"] <= 1.0
        assert cfg["path"] in ("f2p", "ot")
    # log-uniform: the draws spread over decades, not bunched at the top
    many = RandomSearch({"s": LogUniform(1e-4, 1.0)}, samples=200, seed=0).configurations()
    assert sum(cfg["s"] < 1e-2 for cfg in many) > 60


def test_random_search_tuning_gives_identical_results_for_the_same_seed(toy):
    search = RandomSearch({"gain": Uniform(0.3, 0.9)}, samples=4, seed=11)
    r1 = tune(nudging_factory, search, toy, 2, seeds=(10_000,), cycles=80, burn_in=20)
    r2 = tune(nudging_factory, search, toy, 2, seeds=(10_000,), cycles=80, burn_in=20)
    assert [t.params for t in r1.trials] == [t.params for t in r2.trials]
    assert [t.scores for t in r1.trials] == [t.scores for t in r2.trials]
    assert r1.best_params == r2.best_params


def test_a_small_discrete_random_search_drops_duplicates():
    configs = RandomSearch({"x": [1, 2]}, samples=20, seed=0).configurations()
    assert sorted(c["x"] for c in configs) == [1, 2]


def test_grid_configurations_are_every_combination_first_name_slowest():
    configs = grid_configurations({"a": [1, 2], "b": ["x", "y", "z"]})
    assert len(configs) == 6
    assert configs[0] == {"a": 1, "b": "x"} and configs[1] == {"a": 1, "b": "y"}
    assert configs[-1] == {"a": 2, "b": "z"}


@pytest.mark.parametrize(
    "space, error",
    [({}, ValueError), ({"a": []}, ValueError), ({"a": "abc"}, ValueError),
     ({"a": Uniform(0, 1)}, TypeError)],
)
def test_bad_grids_are_refused(space, error):
    with pytest.raises(error):
        grid_configurations(space)


def test_bad_ranges_are_refused():
    with pytest.raises(ValueError, match="LogUniform"):
        LogUniform(0.0, 1.0)
    with pytest.raises(ValueError, match="Uniform"):
        Uniform(1.0, 1.0)
    with pytest.raises(ValueError, match="samples"):
        RandomSearch({"a": [1]}, samples=0)


# ------------------------------------------------------------ failures and the table


def test_failing_configurations_are_recorded_and_ranked_last(toy):
    """A factory that raises (gain < 0) does not stop the search: its runs carry the
    error, NaN scores, the diverged flag, and the configuration ranks after every
    working one even though NaN compares as nothing."""
    result = tune(nudging_factory, {"gain": [-1.0, 0.5, 0.3]}, toy, 2, seeds=(10_000, 10_001),
                  cycles=60, burn_in=10)
    bad = result.trials[0]
    assert bad.failed == 2 and bad.diverged == 2
    assert all(math.isnan(s) for s in bad.scores) and math.isnan(bad.mean)
    assert "ValueError: gain must be >= 0" in bad.runs[0]["error"]
    assert result.ranked[-1] is bad
    assert result.best_params["gain"] in (0.5, 0.3)


def test_run_twin_flags_divergence_above_the_climatological_sd(toy):
    """The fixed-gain filter at gain 0.6 stays far below the climatological sd (≈ 2.29 for
    A = 0.9, Q = 1) and is not flagged; a filter that amplifies its members (x ← 3x + 1)
    is flagged ``diverged`` (its members overflow, which is recorded as an error)."""
    clim = climatology(toy)
    assert clim.sd == pytest.approx(math.sqrt(Q / (1 - A**2)), rel=0.05)
    good = run_twin(nudging_factory({"gain": 0.6}), toy, 2, 0)
    assert not good["diverged"] and good["error"] is None and good["skill"] < clim.sd
    assert set(good) >= {"skill", "spread", "ssr", "crps", "seconds", "diverged", "error"}

    def amplifying(emulator, generator):
        f = FixedGainNudging(0.0)
        f.step = lambda ens, obs: (Ensemble(3.0 * ens.particles + 1.0, ens.log_weights),
                                   StepInfo(ess=2.0))
        return f

    bad = run_twin(amplifying, toy, 2, 0)
    assert bad["diverged"]
    assert bad["error"] is not None or bad["skill"] > clim.sd


def test_the_markdown_table_lists_every_configuration_best_first(toy):
    result = tune(nudging_factory, {"gain": [0.2, 0.6, -1.0]}, toy, 2,
                  seeds=(10_000, 10_001), cycles=60, burn_in=10, label="nudging")
    assert isinstance(result, TuningResult)
    text = result.table()
    lines = text.splitlines()
    assert lines[0].startswith("Tuning nudging on ar1 (N = 2; seeds 10000, 10001; 60 cycles")
    header = [c.strip() for c in lines[2].strip("|").split("|")]
    assert header == ["rank", "gain", "skill (mean ± se)", "diverged", "failed", "seconds"]
    assert set(lines[3].replace("|", "")) == {"-"}
    rows = lines[4:]
    assert len(rows) == 3
    assert rows[0].startswith("| 1 ★ | 0.6 |") and "±" in rows[0]
    assert "| — | 2/2 | 2/2 |" in rows[-1]  # the failing configuration, last
    assert str(result) == text
    assert result.table(top=1).count("\n") == 4


def test_refinement_reruns_the_best_configurations_on_more_seeds_and_ranks_them_first(toy):
    """Second stage: the 2 best of the first pass are re-run on 3 more seeds; their mean
    and standard error are over all 5 seeds and they rank ahead of the others."""
    result = tune(nudging_factory, {"gain": [0.2, 0.4, 0.6, 0.8, 1.0]}, toy, 2,
                  seeds=(10_000, 10_001), cycles=150, burn_in=30, refine=2,
                  refine_seeds=(10_002, 10_003, 10_004))
    refined = [t for t in result.trials if t.refined]
    assert len(refined) == 2 and result.refine == 2
    assert all(len(t.scores) == 5 and t.runs[-1]["seed"] == 10_004 for t in refined)
    assert all(len(t.scores) == 2 for t in result.trials if not t.refined)
    assert result.ranked[:2] == sorted(refined, key=lambda t: t.mean)
    assert result.best_params == {"gain": 0.6}
    assert "best 2 re-run on seeds 10002, 10003, 10004" in result.table().splitlines()[0]
    assert "| 0/5 | 0/5 |" in result.table().splitlines()[4]
    with pytest.raises(ValueError, match="refine_seeds"):
        tune(nudging_factory, {"gain": [0.5]}, toy, 2, seeds=(1,), refine=1, refine_seeds=(1,))
    with pytest.raises(ValueError, match="refine"):
        tune(nudging_factory, {"gain": [0.5]}, toy, 2, seeds=(1,), refine=1)
