r"""Hyperparameter tuning of filters on short *training* twins (DAPPER's habit: tune every
method on the same experiment, then compare at the tuned values).

:func:`tune` runs every configuration of a search space as an
:class:`~genfilter.experiments.config.ExperimentConfig` (``make_config(params, seed)``),
one run per tuning seed through :func:`~genfilter.experiments.runner.run_summary` (the
config's seed is the tuning seed, so run 0 is the twin of that seed: the one seed scheme of
:func:`~genfilter.experiments.runner.run_seed`), scores each run by a summary metric
(analysis RMSE ``"skill"`` by default, lower is better), and reports the mean ± standard
error over seeds of every configuration and the best one.  The training twin is the
config's own (``steps``, ``burn_in``).  The search space is either a grid
(``{name: [values]}``, every combination) or a :class:`RandomSearch` (seeded draws from
lists, :class:`Uniform` or :class:`LogUniform` ranges).

The tuning seeds must differ from the evaluation seeds (the default ``10_000, 10_001`` do
not overlap the evaluation seeds ``0..runs-1`` of :mod:`genfilter.experiments.baselines`),
so the reported scores are not measured on the data the hyperparameters were chosen on.

All configurations of one call see the same twins (common random numbers): differences
between configurations are far more precise than the per-configuration standard errors
suggest.

Chaotic twins have heavy-tailed scores (a filter with too little inflation tracks the truth
in most runs and loses it in a few), so a short search on two seeds can pick a fragile
value.  ``refine=k`` adds a second stage in the spirit of successive halving: the ``k``
best configurations of the first pass are re-run on ``refine_seeds`` and ranked by their
mean over all seeds, ahead of the configurations that were not refined.
"""

from __future__ import annotations

__all__ = [
    "Uniform",
    "format_mean_sem",
    "LogUniform",
    "RandomSearch",
    "grid_configurations",
    "Trial",
    "TuningResult",
    "tune",
]

import itertools
import math
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .config import ConfigError, ExperimentConfig
from .runner import build_emulator, build_twin_setup, run_summary
from .twin import TwinSetup

# ----------------------------------------------------------------------- search spaces


@dataclass(frozen=True)
class Uniform:
    """A continuous range ``[low, high]`` sampled uniformly (random search only)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"Uniform needs finite low < high, got {self.low}, {self.high}")

    def draw(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)


@dataclass(frozen=True)
class LogUniform:
    """A positive range ``[low, high]`` sampled uniformly in log scale (random search only)."""

    low: float
    high: float

    def __post_init__(self) -> None:
        if not (0 < self.low < self.high < math.inf):
            raise ValueError(f"LogUniform needs 0 < low < high < inf, got {self.low}, {self.high}")

    def draw(self, rng: random.Random) -> float:
        return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))


def _round(value: Any, digits: int = 4) -> Any:
    """Rounds floats to ``digits`` significant digits (readable tables, stable keys)."""
    if isinstance(value, float) and math.isfinite(value) and value != 0.0:
        return round(value, digits - 1 - math.floor(math.log10(abs(value))))
    return value


@dataclass(frozen=True)
class RandomSearch:
    """Random search: ``samples`` configurations drawn with ``random.Random(seed)``.

    Arguments:
        space: ``{name: list | Uniform | LogUniform}``; a list is sampled uniformly among
            its values.  Drawn floats are rounded to 4 significant digits.
        samples: Number of configurations (duplicates are dropped, so a small discrete
            space may give fewer).
        seed: The seed; the same seed gives the same configurations.
    """

    space: Mapping[str, Sequence[Any] | Uniform | LogUniform]
    samples: int
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.samples, bool) or int(self.samples) != self.samples or self.samples < 1:
            raise ValueError(f"RandomSearch.samples must be an integer >= 1, got {self.samples}")
        _check_space(self.space, allow_ranges=True)

    def configurations(self) -> list[dict[str, Any]]:
        rng = random.Random(self.seed)
        out: list[dict[str, Any]] = []
        seen: set[tuple] = set()
        for _ in range(int(self.samples)):
            config = {}
            for name, dim in self.space.items():  # insertion order: reproducible
                if isinstance(dim, (Uniform, LogUniform)):
                    config[name] = _round(dim.draw(rng))
                else:
                    config[name] = list(dim)[rng.randrange(len(dim))]
            key = tuple(repr(v) for v in config.values())
            if key not in seen:
                seen.add(key)
                out.append(config)
        return out


def _check_space(space: Mapping[str, Any], allow_ranges: bool) -> None:
    if not isinstance(space, Mapping) or not space:
        raise ValueError(f"the search space must be a non-empty mapping, got {space!r}")
    for name, dim in space.items():
        if not isinstance(name, str):
            raise TypeError(f"parameter names must be strings, got {name!r}")
        if isinstance(dim, (Uniform, LogUniform)):
            if not allow_ranges:
                raise TypeError(
                    f"{name}: a grid needs a list of values; {type(dim).__name__} ranges are for "
                    "RandomSearch"
                )
            continue
        if isinstance(dim, (str, bytes)) or not isinstance(dim, Sequence) or len(dim) == 0:
            raise ValueError(f"{name}: expected a non-empty list of values, got {dim!r}")


def grid_configurations(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of a grid ``{name: [values]}`` (first name varies slowest)."""
    _check_space(grid, allow_ranges=False)
    names = list(grid)
    return [dict(zip(names, values)) for values in itertools.product(*grid.values())]


# ---------------------------------------------------------------------------- results


@dataclass
class Trial:
    """One configuration's runs on the training twins.

    Attributes:
        params: The configuration.
        scores: The score of each seed (NaN for a run that raised).
        mean, sem: Mean and standard error (sd / √n, ddof 1) over the finite scores.
        failed: Runs that raised or gave a non-finite score.
        diverged: Runs flagged ``diverged`` by
            :func:`~genfilter.experiments.runner.run_summary` (includes the failed ones).
        seconds: Total wall time of the runs.
        runs: The full :func:`~genfilter.experiments.runner.run_summary` dicts.
        refined: Whether the configuration was re-run on the refinement seeds.
    """

    params: dict[str, Any]
    scores: list[float]
    mean: float
    sem: float
    failed: int
    diverged: int
    seconds: float
    runs: list[dict[str, Any]] = field(repr=False, default_factory=list)
    refined: bool = False

    @property
    def rank_key(self) -> tuple[bool, int, float]:
        # refined configurations first; those with failed runs after the others; then by
        # mean score
        return (not self.refined, self.failed, self.mean if math.isfinite(self.mean) else math.inf)


def _format_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{_round(v, 3):g}"
    return str(v)


def format_mean_sem(mean: float, sem: float, digits: int = 3) -> str:
    """``"0.123 ± 0.004"`` (``"—"`` for NaN; the ± part omitted when the sem is NaN)."""
    if not math.isfinite(mean):
        return "—"
    if not math.isfinite(sem):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sem:.{digits}f}"


@dataclass
class TuningResult:
    """The outcome of :func:`tune`.

    Attributes:
        trials: One :class:`Trial` per configuration, in the order they were run.
        score: The name of the score (lower is better).
        N, seeds, cycles, burn_in: The training twins (the configs' ``filter.particles``,
            seeds, ``steps`` and ``burn_in``).
        refine, refine_seeds: The second stage (``refine`` best configurations re-run on
            ``refine_seeds``; 0 = none).
        setup_name: The configs' ``name``.
        label: Free text (e.g. the filter's name) used in the table title.
        seconds: Wall time of the whole search.
    """

    trials: list[Trial]
    score: str
    N: int
    seeds: tuple[int, ...]
    cycles: int
    burn_in: int
    refine: int = 0
    refine_seeds: tuple[int, ...] = ()
    setup_name: str = ""
    label: str = ""
    seconds: float = 0.0

    @property
    def ranked(self) -> list[Trial]:
        """Trials from best to worst (failed runs last, then by mean score)."""
        return sorted(self.trials, key=lambda t: t.rank_key)

    @property
    def best(self) -> Trial:
        return self.ranked[0]

    @property
    def best_params(self) -> dict[str, Any]:
        return dict(self.best.params)

    def table(self, digits: int = 3, top: int | None = None) -> str:
        """Markdown table of every configuration, best first (the best is marked ★)."""
        names = list(self.trials[0].params) if self.trials else []
        head = ["rank", *names, f"{self.score} (mean ± se)", "diverged", "failed", "seconds"]
        lines = [
            "Tuning" + (f" {self.label}" if self.label else "") + f" on {self.setup_name} "
            f"(N = {self.N}; seeds {', '.join(map(str, self.seeds))}"
            + (
                f", best {self.refine} re-run on seeds {', '.join(map(str, self.refine_seeds))}"
                if self.refine
                else ""
            )
            + f"; {self.cycles} cycles, burn-in {self.burn_in}; {self.score}: lower is better)",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        rows = self.ranked if top is None else self.ranked[:top]
        for i, t in enumerate(rows, 1):
            mark = " ★" if i == 1 else ""
            cells = [
                f"{i}{mark}",
                *(_format_value(t.params[n]) for n in names),
                format_mean_sem(t.mean, t.sem, digits),
                f"{t.diverged}/{len(t.scores)}",
                f"{t.failed}/{len(t.scores)}",
                f"{t.seconds:.1f}",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


# ------------------------------------------------------------------------------- tune


def _score_of(run: dict[str, Any], score: str | Callable[[dict[str, Any]], float]) -> float:
    value = score(run) if callable(score) else run[score]
    value = float(value)
    return value if (run.get("error") is None and math.isfinite(value)) else math.nan


def _config_failure(params: dict[str, Any], seed: int, exc: Exception) -> dict[str, Any]:
    """The summary of a run whose config could not be built (recorded like a failed run)."""
    nan = float("nan")
    return {
        "N": None,
        "seed": int(seed),
        "error": f"{type(exc).__name__}: {exc}",
        "skill": nan,
        "spread": nan,
        "ssr": nan,
        "crps": nan,
        "seconds": 0.0,
        "diverged": True,
    }


def _twin_key(cfg: ExperimentConfig) -> tuple:
    """The config fields the twin depends on (configs with equal keys share one twin)."""
    return (
        cfg.name,
        cfg.system,
        repr(sorted(cfg.system_options.items())),
        cfg.observations,
        cfg.initial,
        cfg.steps,
        cfg.burn_in,
        cfg.dtype,
    )


def _emulator_key(cfg: ExperimentConfig) -> tuple:
    return (*_twin_key(cfg), cfg.emulator, repr(sorted(cfg.emulator_options.items())))


def tune(
    make_config: Callable[[dict[str, Any], int], ExperimentConfig],
    space: Mapping[str, Sequence[Any]] | RandomSearch,
    seeds: Sequence[int] = (10_000, 10_001),
    *,
    score: str | Callable[[dict[str, Any]], float] = "skill",
    refine: int = 0,
    refine_seeds: Sequence[int] = (),
    label: str = "",
    progress: bool = False,
    setup: TwinSetup | None = None,
    emulator: Any = None,
) -> TuningResult:
    r"""Tunes a filter's hyperparameters on short training twins.

    Arguments:
        make_config: ``make_config(params, seed) -> ExperimentConfig``: the config of one
            configuration ``params`` for the tuning seed ``seed`` (its ``seed`` must be
            ``seed``; run 0 of it is then the twin of ``seed``).  Its ``steps`` and
            ``burn_in`` are the short training twin.  A config that cannot be built
            (:class:`~genfilter.experiments.config.ConfigError`) is recorded as a failed
            run, like a filter that raises.
        space: A grid ``{name: [values]}`` (every combination) or a :class:`RandomSearch`.
        seeds: Twin seeds of the training runs (config seeds) — keep them disjoint from the
            evaluation seeds.
        score: A key of the run summary (``"skill"``, ``"crps"``, ``"spread"``, ...) or a
            callable on the summary; lower is better.
        refine: Re-run the ``refine`` best configurations of the first pass on
            ``refine_seeds`` (second stage; 0 = none).  They are ranked by their mean over
            all seeds, ahead of the others.
        refine_seeds: Twin seeds of the second stage (disjoint from ``seeds`` and from the
            evaluation seeds).
        label: Name used in the table title.
        progress: Print one line per configuration to stderr.
        setup, emulator: The training twin
            (:func:`~genfilter.experiments.runner.build_twin_setup`) and forecast model
            (:func:`~genfilter.experiments.runner.build_emulator`) of every config, built
            once by the caller; ``None``: built from the configs, once per distinct twin
            (and emulator) fields.  A given ``setup`` must have the configs' ``steps`` and
            ``burn_in``.

    Returns:
        A :class:`TuningResult`; ``result.best_params`` is the configuration with the lowest
        mean score among those without failed runs.
    """
    if isinstance(space, RandomSearch):
        configs = space.configurations()
    else:
        configs = grid_configurations(space)
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("tune needs at least one seed")
    if not callable(make_config):
        raise TypeError(
            f"make_config must be callable (params, seed) -> ExperimentConfig, got {make_config!r}"
        )
    if not callable(score) and not isinstance(score, str):
        raise TypeError(f"score must be a summary key or a callable, got {score!r}")
    refine = int(refine)
    refine_seeds = tuple(int(s) for s in refine_seeds)
    if refine < 0 or (refine and not refine_seeds):
        raise ValueError(
            f"refine must be >= 0 and needs refine_seeds, got {refine}, {refine_seeds}"
        )
    if set(refine_seeds) & set(seeds):
        raise ValueError(f"refine_seeds {refine_seeds} must differ from seeds {seeds}")
    score_name = score if isinstance(score, str) else getattr(score, "__name__", "score")
    setups: dict[tuple, TwinSetup] = {}
    emulators: dict[tuple, Any] = {}
    shape: dict[str, Any] = {}  # N, cycles, burn_in, name of the first config built

    def summary(params: dict[str, Any], s: int) -> dict[str, Any]:
        try:
            cfg = make_config(dict(params), s)
        except ConfigError as exc:
            return _config_failure(params, s, exc)
        if not isinstance(cfg, ExperimentConfig):
            raise TypeError(
                f"make_config must return an ExperimentConfig, got {type(cfg).__name__}"
            )
        if cfg.seed != s:
            raise ValueError(
                f"make_config(params, {s}) returned a config with seed "
                f"{cfg.seed}: the tuning seed must be the config's seed"
            )
        for key, value in (
            ("N", cfg.filter.particles),
            ("cycles", cfg.steps),
            ("burn_in", cfg.burn_in),
            ("name", cfg.name),
        ):
            shape.setdefault(key, value)
        if setup is not None:
            if (setup.cycles, setup.burn_in) != (cfg.steps, cfg.burn_in):
                raise ValueError(
                    f"the setup has {setup.cycles} cycles (burn-in {setup.burn_in}) but the "
                    f"config {cfg.steps} steps (burn-in {cfg.burn_in})"
                )
            twin_setup = setup
        else:
            twin_setup = setups.get(_twin_key(cfg))
            if twin_setup is None:
                twin_setup = setups[_twin_key(cfg)] = build_twin_setup(cfg)
        em = emulator
        if em is None:
            em = emulators.get(_emulator_key(cfg))
            if em is None:
                em = emulators[_emulator_key(cfg)] = build_emulator(cfg, twin_setup)
        return run_summary(cfg, 0, twin_setup, em)

    def run(trial: Trial, twin_seeds: Sequence[int]) -> None:
        t0 = time.perf_counter()
        new = [summary(trial.params, s) for s in twin_seeds]
        trial.runs += new
        trial.scores += [_score_of(r, score) for r in new]
        finite = [v for v in trial.scores if math.isfinite(v)]
        trial.mean = sum(finite) / len(finite) if finite else math.nan
        trial.sem = (
            math.sqrt(sum((v - trial.mean) ** 2 for v in finite) / (len(finite) - 1) / len(finite))
            if len(finite) > 1
            else math.nan
        )
        trial.failed = len(trial.scores) - len(finite)
        trial.diverged = sum(bool(r["diverged"]) for r in trial.runs)
        trial.seconds += time.perf_counter() - t0
        if progress:
            errors = {r["error"] for r in new if r["error"]}
            print(
                f"  [{label or 'tune'} N={shape.get('N')}] {trial.params}: {score_name} "
                f"{format_mean_sem(trial.mean, trial.sem)} over {len(trial.scores)} seeds "
                f"({trial.seconds:.1f} s)" + (f" errors: {sorted(errors)}" if errors else ""),
                file=sys.stderr,
                flush=True,
            )

    t_all = time.perf_counter()
    trials = []
    for params in configs:
        trial = Trial(
            params=dict(params),
            scores=[],
            mean=math.nan,
            sem=math.nan,
            failed=0,
            diverged=0,
            seconds=0.0,
            runs=[],
        )
        run(trial, seeds)
        trials.append(trial)
    if refine:
        finalists = sorted(trials, key=lambda t: t.rank_key)[:refine]
        for trial in finalists:
            run(trial, refine_seeds)
            trial.refined = True
    if setup is not None:
        shape.setdefault("cycles", setup.cycles)
        shape.setdefault("burn_in", setup.burn_in)
        shape.setdefault("name", setup.name)
    return TuningResult(
        trials=trials,
        score=score_name,
        N=int(shape.get("N") or 0),
        seeds=seeds,
        cycles=int(shape.get("cycles", 0)),
        burn_in=int(shape.get("burn_in", 0)),
        refine=min(refine, len(trials)),
        refine_seeds=refine_seeds,
        setup_name=str(shape.get("name", "")),
        label=label,
        seconds=time.perf_counter() - t_all,
    )
