r"""Baseline tables: every classical and score-based ensemble filter on the standard
Lorenz-63 and Lorenz-96 twin experiments with the **true (deterministic) model** as the
forecast, tuned on short training twins, scored on independent twins (DAPPER's habit).

Every run is a config (:class:`~genfilter.experiments.config.ExperimentConfig`) of a named
setup (:mod:`genfilter.experiments.setups`) with ``emulator: true``, run by
:func:`~genfilter.experiments.runner.run_summary`:

- **Lorenz-63** (setup ``l63-det``): deterministic Lorenz-63 (σ, ρ, β = 10, 28, 8/3, Euler
  steps of 10⁻³), x1 and x3 observed with noise std 1 every 0.25 time units, initial
  ensemble truth + N(0, 2² I); N = 10 and 50.
- **Lorenz-96** (setup ``l96``): deterministic, D = 40, F = 8, RK4 dt 0.01, all 40
  components observed with noise std 1 every 0.05, initial ensemble truth + N(0, I);
  N = 20 and 40.

Deterministic models are used for comparability with the literature (Sakov & Oke 2008,
Hunt et al. 2007, DAPPER's benchmarks), not the stochastic Lorenz-63 of the paper.

Rows (filter methods of :data:`genfilter.filters.FILTERS`, equations in docs/method.md)
and what is tuned (per system and N):

- ``BPF`` (``bpf``): bootstrap particle filter, resampling at ESS < N/2 (systematic).  With
  a deterministic model duplicates never separate, so the forecast gets additive Gaussian
  jitter of std ``jitter`` (the filter option ``jitter``:
  :class:`~genfilter.emulators.jittered.Jittered`, the EnFF authors' ``model_noise_std``,
  DAPPER's ``reg``); ``jitter`` is tuned.
- ``EnKF`` (``enkf``): perturbed observations, posterior multiplicative ``inflation``
  tuned.
- ``ETKF`` (``etkf``): symmetric square root (Hunt et al. 2007), prior covariance
  ``inflation`` ρ tuned; random mean-preserving rotation (DAPPER's ``rot``) on for
  Lorenz-63, off for Lorenz-96.
- ``LETKF`` (``letkf``): ``inflation`` ρ and Gaspari–Cohn ``radius`` (grid cells) tuned;
  Lorenz-96 only — with three variables localisation is meaningless (``radius = inf`` is
  exactly the ETKF, tests/filters/test_letkf.py), so the row is not run for Lorenz-63.
- ``EnSF`` (``ensf``, Bao et al. 2024): normalised with the climatological mean / std;
  prior ``score`` (paired | mixture), ``eps_beta`` and the number of pseudo-time
  ``steps`` (50 or 100 instead of the official 500, for the compute budget) tuned;
  ``eps_alpha`` = 0.5, h(t) = 1 − t.
- ``EnFF`` (``enff``, Transue et al. 2025): normalised; ``path`` (F2P | OT), ``sigma_min``
  and the local guidance scale ``guidance_scale`` (λ) tuned; K = 10 time points.
- References: ``Forecast`` (``forecast``: free ensemble from the same initial members, no
  observations) and ``Climatology`` (the climatological mean as estimate, spread = the
  climatological sd: :func:`~genfilter.experiments.twin.run_climatology`).

Every number is the mean ± standard error over ``runs`` independent twins of the
time-averaged analysis RMSE (skill) and spread after the burn-in.  Evaluation: one config
per filter and N with seed 0 and ``runs`` runs; run ``r`` is the twin of seed ``r`` and its
filter seed follows :func:`~genfilter.experiments.runner.run_seed`, so every row sees the
same twins.  Tuning (per filter and N) uses 200-cycle twins (burn-in 50) on config seeds
``10_000, 10_001`` and ``10_002..10_005`` (:func:`~genfilter.experiments.tuning.tune` with
``refine``): the cheap filters (BPF, EnKF, ETKF, LETKF) run every grid point on all 6
seeds — their scores are heavy-tailed (too little inflation tracks the truth in most runs
and loses it in a few), so two seeds pick fragile values; EnSF and EnFF run every grid
point on the first 2 seeds and re-run the 3 best on the other 4.  The lowest mean RMSE over
the 6 seeds wins.

Run ``genfilter baselines --system lorenz63`` (or ``lorenz96``; ``--quick`` for a smoke
run), which calls :func:`run_baselines`.
"""

from __future__ import annotations

__all__ = [
    "SYSTEMS",
    "SETUP_NAMES",
    "FILTERS",
    "METHODS",
    "SEARCH_SPACES",
    "TUNED_PARAMS",
    "BaselineTable",
    "baseline_config",
    "filter_options",
    "baseline_table",
    "tune_filter",
    "print_table",
    "run_baselines",
]

import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import ExperimentConfig, parse_config
from .runner import build_emulator, build_twin_setup, run_seed, run_summary
from .setups import SETUPS
from .tuning import TuningResult, format_mean_sem, grid_configurations, tune
from .twin import TwinSetup, climatology, run_climatology

SYSTEMS = ("lorenz63", "lorenz96")
FILTERS = ("BPF", "EnKF", "ETKF", "LETKF", "EnSF", "EnFF")
REFERENCES = ("Forecast", "Climatology")

SETUP_NAMES = {"lorenz63": "l63-det", "lorenz96": "l96"}
"""The named setup (:data:`genfilter.experiments.setups.SETUPS`) of each table."""
METHODS = {
    "BPF": "bpf",
    "EnKF": "enkf",
    "ETKF": "etkf",
    "LETKF": "letkf",
    "EnSF": "ensf",
    "EnFF": "enff",
    "Forecast": "forecast",
}
"""The filter method (:data:`genfilter.filters.FILTERS`) of each row."""
DEFAULT_SIZES = {"lorenz63": (10, 50), "lorenz96": (20, 40)}
DEFAULT_CYCLES = 400
DEFAULT_BURN_IN = 100
TUNE_SEEDS = (10_000, 10_001)
TUNE_REFINE = 3
_REFINE_ALL = ("BPF", "EnKF", "ETKF", "LETKF")  # cheap: every configuration on every seed
TUNE_REFINE_SEEDS = (10_002, 10_003, 10_004, 10_005)
TUNE_CYCLES = 200
TUNE_BURN_IN = 50

_ENSF_STEPS = [50, 100]
_ENFF_SPACE = {
    "path": ["f2p", "ot"],
    "sigma_min": [0.01, 0.1, 0.3],
    "guidance_scale": [0.01, 0.03, 0.1, 0.3],
}

SEARCH_SPACES: dict[str, dict[str, dict[str, list]]] = {
    "lorenz63": {
        "BPF": {"jitter": [0.25, 0.5, 1.0, 2.0, 3.0]},
        "EnKF": {"inflation": [1.0, 1.02, 1.05, 1.1, 1.2, 1.3, 1.5]},
        "ETKF": {"inflation": [1.0, 1.02, 1.05, 1.1, 1.2, 1.4], "rotate": [True]},
        "EnSF": {
            "score": ["paired", "mixture"],
            "eps_beta": [0.0003, 0.001, 0.003, 0.01],
            "steps": _ENSF_STEPS,
        },
        "EnFF": _ENFF_SPACE,
    },
    "lorenz96": {
        "BPF": {"jitter": [0.1, 0.2, 0.5, 1.0]},
        "EnKF": {"inflation": [1.0, 1.05, 1.1, 1.15, 1.2, 1.3, 1.5]},
        "ETKF": {"inflation": [1.0, 1.02, 1.05, 1.1, 1.15, 1.2], "rotate": [False]},
        "LETKF": {"inflation": [1.0, 1.02, 1.05, 1.1], "radius": [2.0, 4.0, 7.3, 12.0]},
        "EnSF": {
            "score": ["paired", "mixture"],
            "eps_beta": [0.001, 0.003, 0.01, 0.03],
            "steps": _ENSF_STEPS,
        },
        "EnFF": _ENFF_SPACE,
    },
}
"""Grids searched by :func:`baseline_table` (``tune=True``), per system and filter."""

TUNED_PARAMS: dict[str, dict[str, dict[int, dict[str, Any]]]] = {
    "lorenz63": {
        "BPF": {10: {"jitter": 1.0}, 50: {"jitter": 0.25}},
        "EnKF": {10: {"inflation": 1.2}, 50: {"inflation": 1.0}},
        "ETKF": {10: {"inflation": 1.2, "rotate": True}, 50: {"inflation": 1.02, "rotate": True}},
        "EnSF": {
            10: {"score": "mixture", "eps_beta": 0.01, "steps": 50},
            50: {"score": "mixture", "eps_beta": 0.003, "steps": 100},
        },
        "EnFF": {
            10: {"path": "ot", "sigma_min": 0.1, "guidance_scale": 0.1},
            50: {"path": "ot", "sigma_min": 0.1, "guidance_scale": 0.03},
        },
    },
    "lorenz96": {
        "BPF": {20: {"jitter": 1.0}, 40: {"jitter": 1.0}},
        "EnKF": {20: {"inflation": 1.15}, 40: {"inflation": 1.05}},
        "ETKF": {
            20: {"inflation": 1.05, "rotate": False},
            40: {"inflation": 1.02, "rotate": False},
        },
        "LETKF": {20: {"inflation": 1.02, "radius": 12.0}, 40: {"inflation": 1.0, "radius": 12.0}},
        "EnSF": {
            20: {"score": "paired", "eps_beta": 0.01, "steps": 100},
            40: {"score": "paired", "eps_beta": 0.01, "steps": 100},
        },
        "EnFF": {
            20: {"path": "ot", "sigma_min": 0.01, "guidance_scale": 0.1},
            40: {"path": "ot", "sigma_min": 0.01, "guidance_scale": 0.1},
        },
    },
}
"""Hyperparameters used with ``tune=False``: the values selected by the full tuning run
documented in docs/baselines.md (per system, filter and N; the nearest N is used for other
ensemble sizes)."""


# ---------------------------------------------------------------------------- configs

_DEFAULT_OPTIONS = {"EnSF": {"eps_alpha": 0.5}, "EnFF": {"steps": 10}}


def filter_options(name: str, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(method, options)`` of the config of row ``name`` with hyperparameters ``params``
    (the hyperparameters are the filter's options; the BPF's ``jitter`` wraps the forecast
    model, EnSF's ε_α defaults to 0.5 and EnFF's ``steps`` to 10; EnSF and EnFF get the
    climatological mean / std from :func:`~genfilter.experiments.runner.build_filter`)."""
    if name not in METHODS:
        raise ValueError(f"unknown baseline {name!r}; expected one of {tuple(METHODS)}")
    return METHODS[name], {**_DEFAULT_OPTIONS.get(name, {}), **dict(params)}


def baseline_config(
    system: str,
    name: str,
    N: int,
    params: dict[str, Any] | None = None,
    *,
    steps: int = DEFAULT_CYCLES,
    burn_in: int = DEFAULT_BURN_IN,
    runs: int = 1,
    seed: int = 0,
) -> ExperimentConfig:
    """The config of row ``name`` (:data:`METHODS`) with ``N`` members on the table's setup
    (:data:`SETUP_NAMES`), the true model as forecast and ``params`` as filter options."""
    if system not in SYSTEMS:
        raise ValueError(f"system must be one of {SYSTEMS}, got {system!r}")
    method, options = filter_options(name, params or {})
    return parse_config(
        {
            "name": system,
            "setup": SETUP_NAMES[system],
            "emulator": "true",
            "filter": {"method": method, "particles": int(N), "options": options},
            "steps": int(steps),
            "burn_in": int(burn_in),
            "runs": int(runs),
            "seed": int(seed),
            "save": "moments",
        }
    )


def _default_params(system: str, name: str, N: int) -> dict[str, Any]:
    table = TUNED_PARAMS[system].get(name)
    if not table:
        return {}
    nearest = min(table, key=lambda n: (abs(math.log(n / N)), n))
    return dict(table[nearest])


# ----------------------------------------------------------------------------- table


def _mean_sem(values: Sequence[float]) -> tuple[float, float]:
    v = [x for x in values if math.isfinite(x)]
    if not v:
        return math.nan, math.nan
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, math.nan
    return m, math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1) / len(v))


def _params_text(params: dict[str, Any]) -> str:
    def fmt(v):
        return f"{v:g}" if isinstance(v, float) else str(v)

    return ", ".join(f"{k}={fmt(v)}" for k, v in params.items()) if params else "—"


@dataclass
class BaselineTable:
    """Results of :func:`baseline_table`.

    Attributes:
        system: ``"lorenz63"`` or ``"lorenz96"``.
        description: The twin experiment in words.
        ensemble_sizes, runs, cycles, burn_in: The evaluation twins (seeds ``0..runs-1``).
        filters: Row names, in order (references last).
        results: ``{filter: {N: [run summaries]}}``
            (:func:`~genfilter.experiments.runner.run_summary` dicts).
        params: ``{filter: {N: hyperparameters used}}``.
        tuning: ``{filter: {N: TuningResult}}`` (empty when not tuned or read from JSON).
        tuning_tables: ``{filter: {N: markdown}}`` of every tuning (kept in the JSON).
        tuned: Whether the hyperparameters were tuned in this call.
        tune_seeds, tune_refine, tune_refine_seeds, tune_cycles, tune_burn_in: The
            training twins.
        seconds: ``{"tuning", "evaluation", "total"}`` wall times.
        climatological_sd: The scalar climatological sd (the divergence threshold).
        notes: Remarks printed under the table.
    """

    system: str
    description: str
    ensemble_sizes: tuple[int, ...]
    runs: int
    cycles: int
    burn_in: int
    filters: list[str]
    results: dict[str, dict[int, list[dict[str, Any]]]]
    params: dict[str, dict[int, dict[str, Any]]]
    tuning: dict[str, dict[int, TuningResult]] = field(default_factory=dict)
    tuned: bool = True
    tune_seeds: tuple[int, ...] = TUNE_SEEDS
    tune_refine: int = TUNE_REFINE
    tune_refine_seeds: tuple[int, ...] = TUNE_REFINE_SEEDS
    tune_cycles: int = TUNE_CYCLES
    tune_burn_in: int = TUNE_BURN_IN
    seconds: dict[str, float] = field(default_factory=dict)
    climatological_sd: float = math.nan
    notes: list[str] = field(default_factory=list)
    tuning_tables: dict[str, dict[int, str]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, by_n in self.tuning.items():
            for N, result in by_n.items():
                self.tuning_tables.setdefault(name, {})[N] = result.table()

    def cell(self, name: str, N: int) -> dict[str, Any]:
        """Mean ± s.e. over runs of skill, spread, SSR, CRPS; the median skill (scores of
        chaotic twins are heavy-tailed: a filter may lose the truth in a few runs);
        diverged / failed counts; mean seconds per run."""
        runs = self.results[name][N]
        out: dict[str, Any] = {}
        for key in ("skill", "spread", "ssr", "crps", "seconds"):
            out[key], out[key + "_se"] = _mean_sem([r[key] for r in runs])
        finite = sorted(r["skill"] for r in runs if math.isfinite(r["skill"]))
        out["skill_median"] = (
            (finite[(len(finite) - 1) // 2] + finite[len(finite) // 2]) / 2 if finite else math.nan
        )
        out["runs"] = len(runs)
        out["diverged"] = sum(bool(r["diverged"]) for r in runs)
        out["failed"] = sum(r["error"] is not None for r in runs)
        out["errors"] = sorted({r["error"] for r in runs if r["error"]})
        return out

    def _cell_text(self, name: str, N: int, key: str, digits: int = 3) -> str:
        c = self.cell(name, N)
        text = format_mean_sem(c[key], c[key + "_se"], digits)
        if key == "skill" and c["diverged"] and name not in REFERENCES:
            text += f" ({c['diverged']}/{c['runs']} div.)"
        return text

    def markdown(self, digits: int = 3) -> str:
        """The tables: RMSE and spread (mean ± s.e.); CRPS, SSR and seconds per run; the
        hyperparameters used."""
        Ns = self.ensemble_sizes
        title = {"lorenz63": "Lorenz-63", "lorenz96": "Lorenz-96"}.get(self.system, self.system)
        lines = [
            f"### {title}: analysis RMSE and spread (mean ± s.e. over {self.runs} runs)",
            "",
            (
                f"{self.description}; true model as the forecast; {self.cycles} cycles, scores "
                f"averaged over cycles {self.burn_in + 1}–{self.cycles} (burn-in {self.burn_in}); "
                f"evaluation seeds 0–{self.runs - 1}; climatological sd "
                f"{self.climatological_sd:.2f}."
            ),
            "",
        ]
        head = ["filter"] + [f"{h} (N = {N})" for N in Ns for h in ("RMSE", "spread")]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in self.filters:
            cells = [name]
            for N in Ns:
                cells += [
                    self._cell_text(name, N, "skill", digits),
                    self._cell_text(name, N, "spread", digits),
                ]
            lines.append("| " + " | ".join(cells) + " |")
        lines += [
            "",
            (
                "Median RMSE over the runs, CRPS, spread/skill ratio (mean of per-cycle "
                "ratios) and seconds per run:"
            ),
            "",
        ]
        head = ["filter"] + [
            f"{h} (N = {N})" for N in Ns for h in ("median RMSE", "CRPS", "SSR", "s/run")
        ]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in self.filters:
            cells = [name]
            for N in Ns:
                c = self.cell(name, N)
                cells += [
                    f"{c['skill_median']:.{digits}f}",
                    format_mean_sem(c["crps"], c["crps_se"], digits),
                    format_mean_sem(c["ssr"], c["ssr_se"], 2),
                    f"{c['seconds']:.1f}",
                ]
            lines.append("| " + " | ".join(cells) + " |")
        refine = (
            f"; all configurations (BPF, EnKF, ETKF, LETKF) or the best {self.tune_refine} "
            f"(EnSF, EnFF) re-run on seeds {', '.join(map(str, self.tune_refine_seeds))}"
            if self.tune_refine
            else ""
        )
        how = (
            f"tuned on seeds {', '.join(map(str, self.tune_seeds))}{refine}; "
            f"{self.tune_cycles} cycles, burn-in {self.tune_burn_in}; lowest mean analysis RMSE"
            if self.tuned
            else "stored values (TUNED_PARAMS, from the documented tuning run)"
        )
        lines += ["", f"Hyperparameters ({how}):", ""]
        head = ["filter"] + [f"N = {N}" for N in Ns]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for name in self.filters:
            if name in REFERENCES:
                continue
            lines.append(
                "| " + " | ".join([name] + [_params_text(self.params[name][N]) for N in Ns]) + " |"
            )
        if self.seconds:
            lines += [
                "",
                "Wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in self.seconds.items()) + ".",
            ]
        for note in self.notes:
            lines += ["", note]
        errors = [(n, N, e) for n in self.filters for N in Ns for e in self.cell(n, N)["errors"]]
        for n, N, e in errors:
            lines += ["", f"Error in {n} (N = {N}): {e}"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.markdown()

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable record (runs, parameters, tuning tables, timings)."""
        return {
            "system": self.system,
            "description": self.description,
            "ensemble_sizes": list(self.ensemble_sizes),
            "runs": self.runs,
            "cycles": self.cycles,
            "burn_in": self.burn_in,
            "filters": self.filters,
            "results": {
                f: {str(N): runs for N, runs in d.items()} for f, d in self.results.items()
            },
            "params": {f: {str(N): p for N, p in d.items()} for f, d in self.params.items()},
            "tuning": {
                f: {str(N): text for N, text in d.items()} for f, d in self.tuning_tables.items()
            },
            "tuned": self.tuned,
            "tune_seeds": list(self.tune_seeds),
            "tune_refine": self.tune_refine,
            "tune_refine_seeds": list(self.tune_refine_seeds),
            "tune_cycles": self.tune_cycles,
            "tune_burn_in": self.tune_burn_in,
            "seconds": self.seconds,
            "climatological_sd": self.climatological_sd,
            "notes": self.notes,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BaselineTable:
        """Restores a table written by :meth:`to_dict` (tuning results as their tables)."""

        def by_n(x: dict[str, Any]) -> dict[int, Any]:
            return {int(N): v for N, v in x.items()}

        return cls(
            system=d["system"],
            description=d["description"],
            ensemble_sizes=tuple(d["ensemble_sizes"]),
            runs=d["runs"],
            cycles=d["cycles"],
            burn_in=d["burn_in"],
            filters=list(d["filters"]),
            results={f: by_n(v) for f, v in d["results"].items()},
            params={f: by_n(v) for f, v in d["params"].items()},
            tuned=d["tuned"],
            tune_seeds=tuple(d["tune_seeds"]),
            tune_refine=d.get("tune_refine", 0),
            tune_refine_seeds=tuple(d.get("tune_refine_seeds", ())),
            tune_cycles=d["tune_cycles"],
            tune_burn_in=d["tune_burn_in"],
            seconds=dict(d["seconds"]),
            climatological_sd=d["climatological_sd"],
            notes=list(d["notes"]),
            tuning_tables={f: by_n(v) for f, v in d["tuning"].items()},
        )


def _table_text(table: BaselineTable, tuning: bool = False) -> str:
    parts = [table.markdown()]
    if tuning:
        parts += [text for by_n in table.tuning_tables.values() for text in by_n.values()]
    return "\n\n".join(parts)


def print_table(table: BaselineTable, tuning: bool = False, file=None) -> None:
    """Prints the markdown tables of ``table`` (and every tuning table if ``tuning``)."""
    file = file or sys.stdout
    print(_table_text(table, tuning), file=file)
    file.flush()


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(msg, file=sys.stderr, flush=True)


def baseline_table(
    system: str = "lorenz63",
    ensemble_sizes: Sequence[int] | None = None,
    runs: int = 10,
    cycles: int = DEFAULT_CYCLES,
    burn_in: int = DEFAULT_BURN_IN,
    tune: bool = True,
    progress: bool = True,
    *,
    filters: Sequence[str] | None = None,
    tune_seeds: Sequence[int] = TUNE_SEEDS,
    tune_refine: int = TUNE_REFINE,
    tune_refine_seeds: Sequence[int] = TUNE_REFINE_SEEDS,
    tune_cycles: int = TUNE_CYCLES,
    tune_burn_in: int = TUNE_BURN_IN,
    search_spaces: dict[str, dict[str, list]] | None = None,
) -> BaselineTable:
    r"""Runs the baseline comparison on one system.

    Arguments:
        system: ``"lorenz63"`` or ``"lorenz96"`` (setups in the module docstring).
        ensemble_sizes: Default (10, 50) for Lorenz-63, (20, 40) for Lorenz-96.
        runs: Independent twins (seeds ``0..runs-1``) per filter and N.
        cycles, burn_in: The evaluation twin.
        tune: Tune every filter per N on the training twins (:func:`~genfilter.experiments.
            tuning.tune` over :data:`SEARCH_SPACES`); ``False`` uses :data:`TUNED_PARAMS`.
        progress: Log progress lines to stderr.
        filters: Subset of :data:`FILTERS` (default: all that apply; LETKF is skipped for
            Lorenz-63).  The references (free forecast, climatology) are always added.
        tune_seeds, tune_cycles, tune_burn_in: The training twins; ``tune_seeds`` must not
            overlap ``0..runs-1``.
        tune_refine, tune_refine_seeds: Second tuning stage: the ``tune_refine`` best
            configurations re-run on ``tune_refine_seeds`` (0 = none).
        search_spaces: Override :data:`SEARCH_SPACES` ``[system]`` (``{filter: grid}``).

    Returns:
        A :class:`BaselineTable` (``print_table`` or ``str`` for markdown).
    """
    if system not in SYSTEMS:
        raise ValueError(f"system must be one of {SYSTEMS}, got {system!r}")
    Ns = tuple(int(n) for n in (ensemble_sizes or DEFAULT_SIZES[system]))
    if any(n < 2 for n in Ns):
        raise ValueError(f"ensemble sizes must be >= 2, got {Ns}")
    if int(runs) < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    tune_seeds = tuple(int(s) for s in tune_seeds)
    tune_refine_seeds = tuple(int(s) for s in tune_refine_seeds) if tune_refine else ()
    if tune and set(tune_seeds + tune_refine_seeds) & set(range(int(runs))):
        raise ValueError(
            f"tuning seeds {tune_seeds + tune_refine_seeds} overlap the evaluation seeds "
            f"0..{runs - 1}: tuning data would be evaluation data"
        )
    names = list(filters) if filters is not None else list(FILTERS)
    unknown = set(names) - set(FILTERS)
    if unknown:
        raise ValueError(f"unknown filters {sorted(unknown)}; expected a subset of {FILTERS}")
    notes = []
    if system == "lorenz63" and "LETKF" in names:
        names.remove("LETKF")
        notes.append(
            "LETKF is not run on Lorenz-63: with three variables localisation is meaningless and "
            "the LETKF with radius = ∞ is exactly the ETKF (tests/filters/test_letkf.py)."
        )
    spaces = dict(SEARCH_SPACES[system])
    if search_spaces:
        spaces.update(search_spaces)

    t_start = time.perf_counter()
    # one twin setup and one forecast model per table: every row sees the same twins
    reference = baseline_config(
        system, "Forecast", Ns[0], steps=int(cycles), burn_in=int(burn_in), runs=int(runs)
    )
    setup = build_twin_setup(reference)
    emulator = build_emulator(reference, setup)
    clim = climatology(setup)
    short = setup.with_cycles(int(tune_cycles), int(tune_burn_in))

    params: dict[str, dict[int, dict[str, Any]]] = {n: {} for n in names}
    tuning: dict[str, dict[int, TuningResult]] = {}
    for name in names:
        for N in Ns:
            if tune:
                t0 = time.perf_counter()
                result = tune_filter(
                    system,
                    name,
                    spaces[name],
                    N,
                    short,
                    emulator,
                    tune_seeds,
                    tune_refine,
                    tune_refine_seeds,
                )
                tuning.setdefault(name, {})[N] = result
                params[name][N] = result.best_params
                best = result.best
                _log(
                    progress,
                    f"[{system} N={N}] tuned {name}: {_params_text(best.params)} "
                    f"(training RMSE {format_mean_sem(best.mean, best.sem)} over "
                    f"{len(best.scores)} seeds; "
                    f"{len(result.trials)} configs, {time.perf_counter() - t0:.0f} s)",
                )
            else:
                params[name][N] = _default_params(system, name, N)
    t_tuned = time.perf_counter()

    rows = names + list(REFERENCES)
    results: dict[str, dict[int, list[dict[str, Any]]]] = {r: {} for r in rows}
    for name in rows:
        for N in Ns:
            t0 = time.perf_counter()
            cfg = baseline_config(
                system,
                "Forecast" if name == "Climatology" else name,
                N,
                params.get(name, {}).get(N, {}),
                steps=int(cycles),
                burn_in=int(burn_in),
                runs=int(runs),
            )
            if name == "Climatology":
                runs_ = [run_climatology(setup, run_seed(cfg, r)[0]) for r in range(cfg.runs)]
            else:
                runs_ = [run_summary(cfg, r, setup, emulator) for r in range(cfg.runs)]
            results[name][N] = runs_
            m, s = _mean_sem([r["skill"] for r in runs_])
            _log(
                progress,
                f"[{system} N={N}] {name}: RMSE {format_mean_sem(m, s)} "
                f"({time.perf_counter() - t0:.0f} s)",
            )
    t_end = time.perf_counter()
    if "BPF" in names:
        notes.append(
            "BPF forecasts carry additive Gaussian jitter of the tuned std (deterministic "
            "model: otherwise resampled duplicates never separate)."
        )
    if {"EnSF", "EnFF"} & set(names):
        notes.append("EnSF and EnFF run on states normalised by the climatological mean and sd.")
    notes.append("'div.' counts runs whose RMSE exceeded the climatological sd.")
    return BaselineTable(
        system=system,
        description=SETUPS[SETUP_NAMES[system]].description,
        ensemble_sizes=Ns,
        runs=int(runs),
        cycles=int(cycles),
        burn_in=int(burn_in),
        filters=rows,
        results=results,
        params=params,
        tuning=tuning,
        tuned=bool(tune),
        tune_seeds=tune_seeds,
        tune_refine=int(tune_refine) if tune_refine_seeds else 0,
        tune_refine_seeds=tune_refine_seeds,
        tune_cycles=int(tune_cycles),
        tune_burn_in=int(tune_burn_in),
        seconds={
            "tuning": t_tuned - t_start,
            "evaluation": t_end - t_tuned,
            "total": t_end - t_start,
        },
        climatological_sd=clim.sd,
        notes=notes,
    )


def tune_filter(
    system: str,
    name: str,
    space: dict[str, list],
    N: int,
    setup: TwinSetup,
    emulator: Any,
    seeds: Sequence[int] = TUNE_SEEDS,
    refine: int = TUNE_REFINE,
    refine_seeds: Sequence[int] = TUNE_REFINE_SEEDS,
) -> TuningResult:
    """Tunes row ``name`` over the grid ``space`` on the short training twin ``setup`` (its
    ``cycles`` and ``burn_in`` become the configs' ``steps`` and ``burn_in``; each tuning
    seed is a config seed); the cheap filters (BPF, EnKF, ETKF, LETKF) refine every
    configuration (= all seeds)."""
    if name in _REFINE_ALL and refine:
        refine = len(grid_configurations(space))

    def make_config(params: dict[str, Any], seed: int) -> ExperimentConfig:
        return baseline_config(
            system, name, N, params, steps=setup.cycles, burn_in=setup.burn_in, seed=seed
        )

    return tune(
        make_config,
        space,
        seeds=seeds,
        refine=refine if refine_seeds else 0,
        refine_seeds=refine_seeds,
        label=name,
        setup=setup,
        emulator=emulator,
    )


# -------------------------------------------------------------------- command line


def _write(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def run_baselines(
    system: str | None,
    quick: bool = False,
    sizes: Sequence[int] | None = None,
    runs: int | None = None,
    cycles: int | None = None,
    burn_in: int | None = None,
    filters: Sequence[str] | None = None,
    tune: bool = True,
    show_tuning: bool = False,
    out: str | Path | None = None,
    json_path: str | Path | None = None,
    from_json: str | Path | None = None,
    progress: bool = True,
    echo: Callable[[str], Any] = print,
) -> BaselineTable:
    """``genfilter baselines``: computes (or reads) a baseline table, prints it, writes it.

    Arguments:
        system: ``"lorenz63"`` or ``"lorenz96"``; ignored (may be ``None``) with
            ``from_json``: the stored table's system is used.
        quick: Smoke run: 3 runs of 100 cycles (burn-in 30), tuning on one 80-cycle twin
            (burn-in 20, seed 10 000, no refinement); ``runs``, ``cycles`` and ``burn_in``
            still override.
        sizes: Ensemble sizes (default (10, 50) for Lorenz-63, (20, 40) for Lorenz-96).
        runs, cycles, burn_in: The evaluation twins (default 10 runs of 400 cycles,
            burn-in 100).
        filters: Subset of :data:`FILTERS` (default: all; the references are always added).
        tune: Tune on the training twins; ``False`` uses :data:`TUNED_PARAMS`.
        show_tuning: Also print every tuning table.
        out: Write the markdown (with every tuning table) here.
        json_path: Write the record (:meth:`BaselineTable.to_dict`) as JSON here.
        from_json: Print (and with ``out`` write) a table stored with ``json_path`` instead
            of computing one.
        progress: Progress lines on stderr.
        echo: Prints the markdown (``print``, ``typer.echo``).

    Returns:
        The :class:`BaselineTable`.
    """
    if from_json is not None:
        path = Path(from_json)
        if not path.is_file():
            raise FileNotFoundError(f"--from-json: file not found: {path}")
        try:
            table = BaselineTable.from_dict(json.loads(path.read_text()))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(
                f"--from-json: {path} is not a baseline table record ({type(exc).__name__}: {exc})"
            ) from None
    else:
        if system is None:
            raise ValueError(
                f"--system is required (one of {', '.join(SYSTEMS)}) unless --from-json is given"
            )
        kw: dict[str, Any] = {}
        if quick:
            kw.update(
                runs=3,
                cycles=100,
                burn_in=30,
                tune_seeds=(10_000,),
                tune_refine=0,
                tune_cycles=80,
                tune_burn_in=20,
            )
        for key, value in (("runs", runs), ("cycles", cycles), ("burn_in", burn_in)):
            if value is not None:
                kw[key] = value
        table = baseline_table(
            system, ensemble_sizes=sizes, tune=tune, progress=progress, filters=filters, **kw
        )
    echo(_table_text(table, tuning=show_tuning))
    if out is not None:
        written = _write(out, _table_text(table, tuning=True) + "\n")
        print(f"markdown written to {written}", file=sys.stderr, flush=True)
    if json_path is not None and from_json is None:
        written = _write(json_path, json.dumps(table.to_dict(), indent=1, default=str))
        print(f"JSON written to {written}", file=sys.stderr, flush=True)
    return table
