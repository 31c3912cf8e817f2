"""Properties of the tuning helper (genfilter.experiments.tuning) and of run_summary's
bookkeeping, on a linear-Gaussian toy twin whose best hyperparameter is known in closed
form.  The toy system and the toy filter are registered (SYSTEMS, FILTERS) for this module,
so tuning runs through the same config pipeline as every experiment."""

from __future__ import annotations

import math

import pytest
import torch

from genfilter.experiments.config import (
    ExperimentConfig,
    FilterConfig,
    InitialConfig,
    ObservationConfig,
)
from genfilter.experiments.runner import build_emulator, build_twin_setup, run_summary
from genfilter.experiments.tuning import (
    LogUniform,
    RandomSearch,
    TuningResult,
    Uniform,
    grid_configurations,
    tune,
)
from genfilter.experiments.twin import climatology, make_twin
from genfilter.filters.base import Ensemble, StepInfo, uniform_log_weights
from genfilter.systems.base import StochasticSystem

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

    def attractor_states(
        self, n, generator=None, *, burn_in=0.0, dtype=torch.float32, chunk_size=None
    ):
        sd = math.sqrt(Q / (1 - A**2))  # the stationary law
        return sd * torch.randn((n, *self.state_shape), generator=generator, dtype=dtype)


class FixedGainNudging:
    """Toy filter: m ← A m + gain (y − A m) applied to every member (H = I)."""

    def __init__(self, emulator, *, gain: float = 0.5, generator=None) -> None:
        if gain < 0:
            raise ValueError(f"gain must be >= 0, got {gain}")
        self.gain, self.generator = gain, generator

    def init(self, particles):
        return Ensemble(particles.clone(), uniform_log_weights(particles.shape[0]))

    def step(self, ensemble, obs):
        xf = A * ensemble.particles
        xa = xf + self.gain * (obs.y - xf)
        return Ensemble(xa, ensemble.log_weights), StepInfo(ess=float(ensemble.size))


class Amplifying(FixedGainNudging):
    """A filter that blows up: x ← 3x + 1."""

    def step(self, ensemble, obs):
        return Ensemble(3.0 * ensemble.particles + 1.0, ensemble.log_weights), StepInfo(ess=2.0)


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


@pytest.fixture(scope="module", autouse=True)
def toy_registry():
    """Registers the AR(1) system and the two toy filters for this module."""
    from genfilter.filters import FILTERS
    from genfilter.systems.datasets import SYSTEMS, SystemEntry

    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(
            SYSTEMS,
            "ar1",
            SystemEntry(AR1, {}, ("component",), trajectories=8, length=16, burn_in=0.0, chunk=8),
        )
        mp.setitem(FILTERS, "nudging", FixedGainNudging)
        mp.setitem(FILTERS, "amplifying", Amplifying)
        yield


def toy_config(
    params: dict,
    seed: int,
    *,
    steps: int = 400,
    burn_in: int = 50,
    method: str = "nudging",
    N: int = 2,
) -> ExperimentConfig:
    """The AR(1) twin (all 8 components observed, σ_y = 1; initial ensemble truth +
    N(0, I)) with the toy filter; built directly (the toy method is not in METHODS)."""
    return ExperimentConfig(
        name="ar1",
        system="ar1",
        emulator="true",
        filter=FilterConfig(method=method, particles=N, options=dict(params)),
        observations=ObservationConfig(operator="identity", noise_std=math.sqrt(R)),
        initial=InitialConfig(recipe="perturbed", std=1.0, spinup=20.0),
        steps=steps,
        burn_in=burn_in,
        seed=seed,
        save="moments",
        dtype="float64",
    )


def short(steps: int, burn_in: int):
    """``make_config`` of the toy twin with ``steps`` cycles."""
    return lambda params, seed: toy_config(params, seed, steps=steps, burn_in=burn_in)


# ------------------------------------------------------------------ finds the optimum


def test_grid_tuning_finds_the_steady_state_kalman_gain():
    """The fixed-gain filter's RMSE is minimal at the steady-state Kalman gain (0.597 for
    A = 0.9, Q = R = 1); the grid search over 0.2..1.0 picks 0.6, and every configuration's
    mean RMSE matches the closed-form stationary error within 8 % (E sqrt(χ²₈/8) ≈ 0.97
    explains most of the small low bias)."""
    assert kalman_gain() == pytest.approx(0.597, abs=1e-3)
    grid = {"gain": [0.2, 0.4, 0.6, 0.8, 1.0]}
    result = tune(toy_config, grid, seeds=(10_000, 10_001), label="nudging")
    assert result.best_params == {"gain": 0.6}
    for trial in result.trials:
        theory = math.sqrt(stationary_error_var(trial.params["gain"]))
        assert trial.mean == pytest.approx(0.97 * theory, rel=0.08), trial.params
        assert trial.failed == 0 and trial.diverged == 0
        assert math.isfinite(trial.sem) and trial.sem > 0
    # ranking follows the theory at the two ends of the curve
    ranked = [t.params["gain"] for t in result.ranked]
    assert ranked[0] == 0.6 and ranked[-1] == 0.2


def test_tuning_seeds_are_config_seeds_on_the_configs_short_twin():
    """tune() runs the configs' own (short) twin, one run per tuning seed, with the tuning
    seed as the config seed: run 0 of that config is the twin of the seed (the one seed
    scheme, run_seed), a different truth from evaluation seed 0; the score is exactly
    run_summary's."""
    seen = []

    def make_config(params, seed):
        seen.append(seed)
        return toy_config(params, seed, steps=60, burn_in=10)

    result = tune(make_config, {"gain": [0.5]}, seeds=(10_000, 10_001))
    assert seen == [10_000, 10_001]
    assert (result.cycles, result.burn_in, result.seeds, result.N) == (60, 10, (10_000, 10_001), 2)
    assert [r["seed"] for r in result.trials[0].runs] == [10_000, 10_001]
    cfg = toy_config({"gain": 0.5}, 10_000, steps=60, burn_in=10)
    setup = build_twin_setup(cfg)
    again = run_summary(cfg, 0, setup, build_emulator(cfg, setup))
    assert result.trials[0].scores[0] == again["skill"]
    evaluation = build_twin_setup(toy_config({"gain": 0.5}, 0, steps=60, burn_in=10))
    assert not torch.equal(make_twin(setup, 10_000).truth, make_twin(evaluation, 0).truth)
    # a shared setup is used as given; it must match the configs' time sequence
    shared = tune(
        short(60, 10),
        {"gain": [0.5]},
        seeds=(10_000, 10_001),
        setup=setup,
        emulator=build_emulator(cfg, setup),
    )
    assert shared.trials[0].scores == result.trials[0].scores
    with pytest.raises(ValueError, match="cycles"):
        tune(short(40, 10), {"gain": [0.5]}, seeds=(10_000,), setup=setup)
    # the config must carry the tuning seed
    with pytest.raises(ValueError, match="seed"):
        tune(lambda p, s: toy_config(p, 0), {"gain": [0.5]}, seeds=(10_000,))


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


def test_random_search_tuning_gives_identical_results_for_the_same_seed():
    search = RandomSearch({"gain": Uniform(0.3, 0.9)}, samples=4, seed=11)
    r1 = tune(short(80, 20), search, seeds=(10_000,))
    r2 = tune(short(80, 20), search, seeds=(10_000,))
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
    [
        ({}, ValueError),
        ({"a": []}, ValueError),
        ({"a": "abc"}, ValueError),
        ({"a": Uniform(0, 1)}, TypeError),
    ],
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


def test_failing_configurations_are_recorded_and_ranked_last():
    """A filter that refuses its options (gain < 0) and a config that cannot be built do
    not stop the search: their runs carry the error, NaN scores, the diverged flag, and the
    configurations rank after every working one even though NaN compares as nothing."""
    from genfilter.experiments.config import ConfigError

    def make_config(params, seed):
        if params["gain"] > 1.0:
            raise ConfigError(
                f"config field 'filter.options.gain': too large, got {params['gain']}"
            )
        return toy_config(params, seed, steps=60, burn_in=10)

    result = tune(make_config, {"gain": [-1.0, 0.5, 0.3, 2.0]}, seeds=(10_000, 10_001))
    bad, unbuilt = result.trials[0], result.trials[3]
    for trial in (bad, unbuilt):
        assert trial.failed == 2 and trial.diverged == 2
        assert all(math.isnan(s) for s in trial.scores) and math.isnan(trial.mean)
    assert "gain must be >= 0" in bad.runs[0]["error"]
    assert "too large" in unbuilt.runs[0]["error"]
    assert set(map(id, result.ranked[-2:])) == {id(bad), id(unbuilt)}
    assert result.best_params["gain"] in (0.5, 0.3)


def test_run_summary_flags_divergence_above_the_climatological_sd():
    """The fixed-gain filter at gain 0.6 stays far below the climatological sd (≈ 2.29 for
    A = 0.9, Q = 1) and is not flagged; a filter that amplifies its members (x ← 3x + 1)
    is flagged ``diverged`` (its members overflow, which is recorded as an error)."""
    cfg = toy_config({"gain": 0.6}, 0)
    setup = build_twin_setup(cfg)
    clim = climatology(setup)
    assert clim.sd == pytest.approx(math.sqrt(Q / (1 - A**2)), rel=0.05)
    good = run_summary(cfg, 0, setup)
    assert not good["diverged"] and good["error"] is None and good["skill"] < clim.sd
    assert set(good) >= {"skill", "spread", "ssr", "crps", "seconds", "diverged", "error"}
    bad = run_summary(toy_config({}, 0, method="amplifying"), 0, setup)
    assert bad["diverged"]
    assert bad["error"] is not None or bad["skill"] > clim.sd


def test_the_markdown_table_lists_every_configuration_best_first():
    result = tune(
        short(60, 10), {"gain": [0.2, 0.6, -1.0]}, seeds=(10_000, 10_001), label="nudging"
    )
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


def test_refinement_reruns_the_best_configurations_on_more_seeds_and_ranks_them_first():
    """Second stage: the 2 best of the first pass are re-run on 3 more seeds; their mean
    and standard error are over all 5 seeds and they rank ahead of the others."""
    result = tune(
        short(150, 30),
        {"gain": [0.2, 0.4, 0.6, 0.8, 1.0]},
        seeds=(10_000, 10_001),
        refine=2,
        refine_seeds=(10_002, 10_003, 10_004),
    )
    refined = [t for t in result.trials if t.refined]
    assert len(refined) == 2 and result.refine == 2
    assert all(len(t.scores) == 5 and t.runs[-1]["seed"] == 10_004 for t in refined)
    assert all(len(t.scores) == 2 for t in result.trials if not t.refined)
    assert result.ranked[:2] == sorted(refined, key=lambda t: t.mean)
    assert result.best_params == {"gain": 0.6}
    assert "best 2 re-run on seeds 10002, 10003, 10004" in result.table().splitlines()[0]
    assert "| 0/5 | 0/5 |" in result.table().splitlines()[4]
    with pytest.raises(ValueError, match="refine_seeds"):
        tune(toy_config, {"gain": [0.5]}, seeds=(1,), refine=1, refine_seeds=(1,))
    with pytest.raises(ValueError, match="refine"):
        tune(toy_config, {"gain": [0.5]}, seeds=(1,), refine=1)
