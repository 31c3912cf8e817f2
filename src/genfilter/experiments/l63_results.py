r"""The paper's Lorenz-63 results (Savary, Rozet & Louppe 2026, §4.1, Table 1 and Figure 1):
``genfilter experiment l63-table1`` and ``genfilter experiment l63-ensemble-size``.

Every cell is one :class:`~genfilter.experiments.config.ExperimentConfig` run by
:func:`~genfilter.experiments.runner.run_config` into its own netCDF file, so an experiment
that stops (killed, out of time) continues where it was: finished cells are reused and an
unfinished cell resumes from its last step.  All filters of a setup see the same twins
(truth, observations, initial ensemble: run ``r`` uses seed ``r``).

Rows (every filter uses the shipped emulator as its forecast model, as in the paper):

- ``BPF``, ``EnKF``: docs/method.md;
- ``EnSF``, ``EnFF``: docs/baselines.md.  The values tuned on deterministic L63 with noise
  std 1 (docs/baselines.md) diverge here: with noise std 0.25 the likelihood score is 16×
  stiffer, and EnSF's explicit Euler–Maruyama step (``steps = 100``) is unstable (spread
  40).  ``benchmarks/l63_stochastic_grid.py`` (true model, setup (a), N = 32) picked
  EnSF ``steps = 1000`` (mixture score, ε_β = 3e-4) and EnFF ``guidance_scale = 0.01``;
- ``FA-APF``: genfilter's FA-APF on Lorenz-63 (the one configuration used at every N and on
  every setup, also in ``configs/l63-*.yaml`` and the demo): the paper's algorithm (ESS
  interval [50/256, 60/256]·N, MMPS proposal with the projected covariance of
  :mod:`genfilter.emulators.guidance`) with two changes measured in docs/results/l63.md —
  the emulator's fixed-point predictive mean (:data:`FIXED_POINT_MEAN`) in place of one
  denoiser call at t = 1, and moment-matched weights (``weights="gaussian"``, the
  transition covariance deconvolved at the emulator's calibrated ``moments_sigma``,
  :data:`MOMENTS_SIGMA`) in place of the dirac weights (:func:`fa_apf_emulator_options`);
- ``FA-APF (dirac w.)``: the same with the paper's dirac weights;
- ``FA-APF (moments_sigma 0.1)``: ``FA-APF`` with the transition covariance of the gaussian
  weights read at ``moments_sigma = 0.1`` on every setup (the library default; calibrated,
  :data:`MOMENTS_SIGMA`, it is 1.0 for the interval-0.5 emulator): the "before" of the
  calibration on (c) and (d);
- ``FA-APF (paper)``: the paper's configuration (one denoiser call at t = 1, dirac weights);
- ``FA-APF (raw MMPS)``: the paper's configuration with its guidance on the raw Tweedie
  covariance (``covariance="tweedie"``, GMRES 1 iteration): the "before" of the guidance fix;
- ``ETKF``: the deterministic square-root ensemble Kalman filter (docs/baselines.md);
- ``FlowDAS``: the FlowDAS-style ensemble (every member moved by the guided proposal,
  no weights; docs/baselines.md);
- ``FA-APF (exact)``: the oracle FA-APF, FA-APF on the *true* model with both ingredients
  exact up to Monte-Carlo error (:mod:`genfilter.emulators.oracle`): weights from 256
  true-model transitions per particle, the proposal drawn from the same transitions and
  moved by 32 path moves (``moves``), no inflation (β = 1: the inflation guards
  approximate weights). The method's own ceiling at each N, without the costs of the
  emulator and of its approximations. ``l63-table1`` only unless asked for (``--rows``):
  each step integrates N × 256 transitions and 32 moves of N (a 10-run cell of setup (c)
  or (d) takes 5–16 min at N = 16–128 and about 50 min at N = 512 on a shared core);
- ``FA-APF (oracle)``: the first oracle row (separate draws for the weights and a
  200-draw proposal, with inflation), kept for its recorded numbers: its proposal is wider
  than the optimal one where the likelihood is narrow (docs/results/l63.md);
- ``Bayes limit``: a bootstrap PF with 10^5 particles on the *true* model: the best any
  filter can do on the setup (reference, not a competitor).

On setups (c) and (d) (observations every 0.5) the baselines run at the settings of
:data:`TUNED`, chosen by ``benchmarks/l63_cd_tuning.py`` on training twins (seeds 10000,
10001) at N = 64 and used at every N.

``results.md`` ends with paired differences: every row minus ``FA-APF`` over the same twins.

``--quick``: 2 runs of 50 steps, N = 32 (table) and N ∈ {16, 64} (sweep), Bayes limit with
10^4 particles — minutes on a laptop.  ``--full``: 10 runs of 100 steps (burn-in 10),
N = 64 (table), N ∈ {16, 32, 64, 128, 256, 512} (sweep), Bayes limit with 10^5 particles.
"""

from __future__ import annotations

__all__ = [
    "ROWS",
    "TUNED",
    "EXPERIMENTS",
    "Scale",
    "scale_of",
    "cell_config",
    "run_experiment",
    "default_rows",
    "paired_differences",
    "finished_cells",
]

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import open_run
from .config import ExperimentConfig, parse_config
from .reporting import summarize_file
from .runner import run_config

SETUP_TEXT = {
    "a": "x1 and x3 observed every 0.1",
    "b": "x1 observed every 0.1",
    "c": "x1 and x3 observed every 0.5",
    "d": "x1 observed every 0.5",
}
"""The observation setups (named setups ``l63-a`` ... ``l63-d``); (c) and (d) use the
shipped emulator of interval 0.5."""

ROWS: dict[str, tuple[str, dict[str, Any], str]] = {
    "BPF": ("bpf", {}, "shipped"),
    "EnKF": ("enkf", {}, "shipped"),
    "EnSF": ("ensf", {"score": "mixture", "eps_beta": 0.0003, "steps": 1000}, "shipped"),
    "EnFF": ("enff", {"path": "ot", "sigma_min": 0.1, "guidance_scale": 0.01}, "shipped"),
    "FA-APF": ("fa-apf", {"weights": "gaussian"}, "shipped"),
    "FA-APF (dirac w.)": ("fa-apf", {}, "shipped"),
    "FA-APF (moments_sigma 0.1)": ("fa-apf", {"weights": "gaussian"}, "shipped"),
    "FA-APF (paper)": ("fa-apf", {}, "shipped"),
    "FA-APF (paper; gaussian w.)": ("fa-apf", {"weights": "gaussian"}, "shipped"),
    "FA-APF (raw MMPS)": ("fa-apf", {}, "shipped"),
    "ETKF": ("etkf", {}, "shipped"),
    "FlowDAS": ("flowdas", {}, "shipped"),
    "FA-APF (exact)": ("fa-apf", {"weights": "exact", "ess_interval": None}, "oracle"),
    "FA-APF (oracle)": ("fa-apf", {"weights": "exact"}, "oracle"),
    "FA-APF (interpolant)": ("fa-apf", {}, "shipped-interpolant"),
    "FA-APF (interpolant; gaussian w.)": ("fa-apf", {"weights": "gaussian"}, "shipped-interpolant"),
    "BPF (interpolant)": ("bpf", {}, "shipped-interpolant"),
}
"""label -> (method, filter options, emulator)."""

TUNED: dict[str, dict[str, dict[str, Any]]] = {
    "c": {
        "EnKF": {"inflation": 1.0},
        "ETKF": {"inflation": 1.05},
        "EnSF": {"score": "mixture", "eps_beta": 0.003, "steps": 1000},
        "EnFF": {"path": "ot", "sigma_min": 0.1, "guidance_scale": 0.01},
    },
    "d": {
        "EnKF": {"inflation": 1.05},
        "ETKF": {"inflation": 1.3},
        "EnSF": {"score": "mixture", "eps_beta": 0.0003, "steps": 1000},
        "EnFF": {"path": "ot", "sigma_min": 0.1, "guidance_scale": 0.01},
    },
}
"""setup letter -> row label -> filter options replacing the row's (the baselines' tuning
on setups (c) and (d), ``benchmarks/l63_cd_tuning.py``)."""

FIXED_POINT_MEAN = {"mean_sigma": 0.3, "mean_iterations": 2}
"""The diffusion emulator's fixed-point predictive mean (``DiffusionEmulator(mean_sigma=)``,
docs/method.md#tweedie-mean) in place of the paper's one denoiser call at t = 1."""

MOMENTS_SIGMA = {0.1: 0.1, 0.5: 1.0}
"""Interval of the shipped Lorenz-63 diffusion emulator -> its ``moments_sigma`` (the noise
level at which the gaussian weights read the transition covariance), as
:meth:`~genfilter.emulators.diffusion.DiffusionEmulator.calibrate_moments_sigma` chooses it
from the emulator's own draws (``python benchmarks/moments_sigma.py``; no filter score
enters)."""


def fa_apf_emulator_options(setup: str) -> dict[str, Any]:
    """The emulator options of genfilter's FA-APF on a Lorenz-63 setup: the fixed-point
    mean, and the calibrated ``moments_sigma`` of the shipped emulator of the setup's
    interval (read from the named setup ``l63-<setup>``)."""
    from ..systems.datasets import make_system
    from .setups import SETUPS

    if setup not in SETUP_TEXT:
        raise ValueError(f"setup must be one of {sorted(SETUP_TEXT)}, got {setup!r}")
    named = SETUPS[f"l63-{setup}"]
    interval = float(make_system(named.system, **named.system_options).interval)
    return {**FIXED_POINT_MEAN, "moments_sigma": MOMENTS_SIGMA[interval]}


EMULATOR_OPTIONS = {
    "FA-APF": fa_apf_emulator_options,
    "FA-APF (dirac w.)": FIXED_POINT_MEAN,
    "FA-APF (moments_sigma 0.1)": {**FIXED_POINT_MEAN, "moments_sigma": 0.1},
    "FA-APF (raw MMPS)": {"covariance": "tweedie"},
    "FA-APF (exact)": {"moves": 32},
    "FA-APF (oracle)": {"shared_draws": False},
}
"""Sampling options of the emulator for a row (default: none), or a function of the setup
letter giving them (``FA-APF``: :func:`fa_apf_emulator_options`)."""

TABLE_ONLY = ("FA-APF (paper)", "FA-APF (raw MMPS)", "FA-APF (exact)")
"""Rows run by ``l63-table1`` only (not by the ensemble-size sweep) unless asked for."""

ON_REQUEST = (
    "FA-APF (oracle)",
    "FA-APF (paper; gaussian w.)",
    "FA-APF (moments_sigma 0.1)",
    "FA-APF (interpolant)",
    "FA-APF (interpolant; gaussian w.)",
    "BPF (interpolant)",
)
"""Rows run only when asked for (``--rows``): the paper's configuration with gaussian
weights, and the shipped stochastic-interpolant emulator (200 SDE steps; about 3× the
diffusion FA-APF's wall time per cell at N = 512, docs/results/l63.md) in place of the
diffusion one, to separate what the emulator costs from what FA-APF's approximations cost."""

BAYES = "Bayes limit"
EXPERIMENTS = ("l63-table1", "l63-ensemble-size")


@dataclass(frozen=True)
class Scale:
    runs: int
    steps: int
    burn_in: int
    table_n: int
    sizes: tuple[int, ...]
    bayes_n: int


SCALES = {
    "quick": Scale(runs=2, steps=50, burn_in=10, table_n=32, sizes=(16, 64), bayes_n=10_000),
    "full": Scale(
        runs=10,
        steps=100,
        burn_in=10,
        table_n=64,
        sizes=(16, 32, 64, 128, 256, 512),
        bayes_n=100_000,
    ),
}


def scale_of(name: str | Scale) -> Scale:
    if isinstance(name, Scale):
        return name
    if name not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {name!r}")
    return SCALES[name]


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-").replace("--", "-")


def row_emulator_options(label: str, setup: str) -> dict[str, Any]:
    """The emulator options of a row on a setup (:data:`EMULATOR_OPTIONS`)."""
    options = EMULATOR_OPTIONS.get(label, {})
    return dict(options(setup) if callable(options) else options)


def cell_config(setup: str, label: str, n: int, scale: Scale) -> ExperimentConfig:
    """The config of one cell (a row label or ``"Bayes limit"``, ensemble size ``n``)."""
    if setup not in SETUP_TEXT:
        raise ValueError(f"setup must be one of {sorted(SETUP_TEXT)}, got {setup!r}")
    if label == BAYES:
        method, options, emulator = "bpf", {}, "true"
    else:
        method, options, emulator = ROWS[label]
        options = TUNED.get(setup, {}).get(label, options)
    return parse_config(
        {
            "name": f"l63-{setup}",
            "setup": f"l63-{setup}",
            "emulator": emulator,
            "emulator_options": row_emulator_options(label, setup),
            "filter": {"method": method, "particles": int(n), "options": dict(options)},
            "steps": scale.steps,
            "burn_in": scale.burn_in,
            "runs": scale.runs,
            "seed": 0,
            "save": "particles" if n <= 64 else "moments",
        }
    )


def _sizes(experiment: str, scale: Scale) -> tuple[int, ...]:
    """The ensemble sizes of the experiment's rows at this scale."""
    return (scale.table_n,) if experiment == "l63-table1" else scale.sizes


def _cells(experiment: str, scale: Scale, rows) -> list[tuple[str, str, int]]:
    cells = []
    for setup in SETUP_TEXT:
        for n in _sizes(experiment, scale):
            for label in rows:
                cells.append((setup, label, n))
        cells.append((setup, BAYES, scale.bayes_n))
    return cells


def default_rows(experiment: str) -> list[str]:
    """The rows an experiment runs when ``rows`` is not given: every row but those of
    :data:`ON_REQUEST`, and the sweep without those of :data:`TABLE_ONLY`."""
    return [
        r
        for r in ROWS
        if r not in ON_REQUEST and (experiment == "l63-table1" or r not in TABLE_ONLY)
    ]


def run_experiment(
    experiment: str,
    scale: str | Scale = "quick",
    out: str | Path | None = None,
    rows: list[str] | None = None,
    setups: tuple[str, ...] = ("a", "b"),
    progress: bool = True,
    echo=print,
    sizes: tuple[int, ...] | None = None,
) -> Path:
    """Runs (or continues) an experiment; writes one netCDF file per cell under
    ``out/cells/``, then ``results.csv`` and ``results.md`` in ``out``.  Returns ``out``.

    ``sizes``: run only the cells of these ensemble sizes (the Bayes-limit cell only if its
    particle count is among them), e.g. ``(512,)`` to give one N a process of its own; the
    tables still hold every finished cell of the experiment."""
    if experiment not in EXPERIMENTS:
        raise ValueError(f"experiment must be one of {list(EXPERIMENTS)}, got {experiment!r}")
    sc = scale_of(scale)
    if sizes is not None:
        sizes = tuple(sizes)
        known = {*_sizes(experiment, sc), sc.bayes_n}
        bad = [n for n in sizes if n not in known]
        if bad or not sizes:
            raise ValueError(
                f"sizes must be among {sorted(known)} for {experiment} at this scale, "
                f"got {list(sizes)}"
            )
    if rows is None:
        rows = default_rows(experiment)
    rows = list(rows)
    for r in rows:
        if r not in ROWS:
            raise ValueError(f"unknown row {r!r}; rows: {list(ROWS)}")
    scale = scale if isinstance(scale, str) else "custom"
    out = Path(out) if out is not None else Path("outputs") / f"{experiment}-{scale}"
    cells_dir = out / "cells"
    cells_dir.mkdir(parents=True, exist_ok=True)
    cells = _cells(experiment, sc, rows)
    todo = [c for c in cells if c[0] in setups and (sizes is None or c[2] in sizes)]
    for i, (setup, label, n) in enumerate(todo):
        path = _cell_path(cells_dir, setup, label, n)
        if not path.exists():
            echo(
                f"[{i + 1}/{len(todo)}] setup ({setup}) {label} N={n}: {sc.runs} runs × "
                f"{sc.steps} steps"
            )
            parts = path.with_name(path.name + ".parts")
            run_config(
                cell_config(setup, label, n, sc),
                path,
                resume=parts.exists(),
                progress=progress,
                command=f"genfilter experiment {experiment} --{scale}",
                label=label,
            )
    # the tables hold every finished cell of the experiment, the other setups' too: two
    # processes (``--setup a`` and ``--setup b``) then do not overwrite each other's rows
    done = finished_cells(cells_dir, experiment, sc)
    results = [
        {**summarize_file(path), "setup": setup, "filter": label} for setup, label, _, path in done
    ]
    _write_results(out, experiment, scale, sc, results, paired_differences(done))
    return out


def finished_cells(
    cells_dir: str | Path, experiment: str = "l63-ensemble-size", scale: str | Scale = "full"
) -> list[tuple[str, str, int, Path]]:
    """``(setup, label, N, path)`` of every finished cell in ``cells_dir`` of any row of
    :data:`ROWS` (and the Bayes limit) at the experiment's sizes, whichever process ran it."""
    cells_dir = Path(cells_dir)
    return [
        (setup, label, n, path)
        for setup, label, n in _cells(experiment, scale_of(scale), list(ROWS))
        if (path := _cell_path(cells_dir, setup, label, n)).exists()
    ]


def paired_differences(
    cells: list[tuple[str, str, int, Path]], reference: str = "FA-APF"
) -> list[dict[str, Any]]:
    """Every row minus ``reference`` over the same twins, per setup and N (the Bayes-limit
    row of the setup against the reference at every N).

    ``cells``: ``(setup, label, N, path)`` of finished cells.  Returns one dict per pair:
    setup, N, filter, difference (mean ± s.e. of the per-run skill differences), the number
    of runs in which the row is worse than the reference (difference > 0) and the runs
    compared.  Runs pair by index: every cell of a setup uses the same twin for run ``r``.
    """

    def skills(path: Path):
        with open_run(path) as ds:
            return ds["summary_skill"].values

    out = []
    for setup in dict.fromkeys(c[0] for c in cells):
        mine = [c for c in cells if c[0] == setup]
        refs = {n: path for s, label, n, path in mine if label == reference}
        for n, ref_path in sorted(refs.items()):
            base = skills(ref_path)
            for _, label, m, path in mine:
                if label == reference or (m != n and label != BAYES):
                    continue
                other = skills(path)
                k = min(base.size, other.size)
                d = other[:k] - base[:k]
                se = float(d.std(ddof=1) / math.sqrt(k)) if k > 1 else math.nan
                out.append(
                    {
                        "setup": setup,
                        "N": n,
                        "filter": label if label != BAYES else f"{BAYES} (N = {m})",
                        "difference": float(d.mean()),
                        "difference_se": se,
                        "worse": int((d > 0).sum()),
                        "runs": int(k),
                    }
                )
    return out


def _cell_path(cells_dir: Path, setup: str, label: str, n: int) -> Path:
    return cells_dir / f"l63-{setup}_{_slug(label)}_N{n}.nc"


def _fmt(v: float, se: float, digits: int = 3) -> str:
    if not math.isfinite(v):
        return "—"
    return f"{v:.{digits}f} ± {se:.{digits}f}" if math.isfinite(se) else f"{v:.{digits}f}"


def _write_results(
    out: Path,
    experiment: str,
    scale: str,
    sc: Scale,
    results: list[dict],
    paired: list[dict] = (),
) -> None:
    keys = [
        "setup",
        "filter",
        "N",
        "runs",
        "skill",
        "skill_se",
        "spread",
        "spread_se",
        "ssr",
        "ssr_se",
        "crps",
        "crps_se",
        "mean_ess",
        "seconds",
    ]
    with open(out / "results.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        for r in results:
            w.writerow({k: r[k] for k in keys})
    lines = [
        f"# {experiment} (--{scale}): stochastic Lorenz-63, noise std 0.25, "
        f"{sc.runs} runs × {sc.steps} steps, scores after a burn-in of {sc.burn_in}",
        "",
        "Mean ± standard error over runs; skill = RMSE of the ensemble mean, "
        "SSR = spread/skill, CRPS (docs/method.md#metrics). Bayes limit: bootstrap PF with "
        f"{sc.bayes_n} particles on the true model.",
        "",
    ]
    for setup in sorted({r["setup"] for r in results}):
        lines += [
            f"## Setup ({setup}): {SETUP_TEXT[setup]}",
            "",
            "| filter | N | skill | spread | SSR | CRPS | mean ESS | seconds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in results:
            if r["setup"] != setup:
                continue
            lines.append(
                f"| {r['filter']} | {r['N']} | {_fmt(r['skill'], r['skill_se'])} | "
                f"{_fmt(r['spread'], r['spread_se'])} | {_fmt(r['ssr'], r['ssr_se'], 2)} | "
                f"{_fmt(r['crps'], r['crps_se'])} | {r['mean_ess']:.1f} | {r['seconds']:.0f} |"
            )
        lines.append("")
        lines += _skill_against_n([r for r in results if r["setup"] == setup])
        mine = [p for p in paired if p["setup"] == setup]
        if mine:
            lines += [
                "Paired differences, row minus FA-APF over the same twins (positive: the row "
                "is worse than FA-APF):",
                "",
                "| N | filter | skill difference | runs where the row is worse |",
                "|---|---|---|---|",
            ]
            lines += [
                f"| {p['N']} | {p['filter']} | {_fmt(p['difference'], p['difference_se'])} | "
                f"{p['worse']} of {p['runs']} |"
                for p in mine
            ]
            lines.append("")
    (out / "results.md").write_text("\n".join(lines))


def _skill_against_n(results: list[dict]) -> list[str]:
    """Markdown lines of a filter × N skill table (mean ± s.e.; the best filter at each N
    in bold, the Bayes limit excluded); none when no filter has two ensemble sizes."""
    filters = list(dict.fromkeys(r["filter"] for r in results if r["filter"] != BAYES))
    sizes = sorted({int(r["N"]) for r in results if r["filter"] != BAYES})
    if len(sizes) < 2:
        return []
    cell = {(r["filter"], int(r["N"])): r for r in results}
    best = {}
    for n in sizes:
        skills = [
            (cell[f, n]["skill"], f)
            for f in filters
            if (f, n) in cell and math.isfinite(cell[f, n]["skill"])
        ]
        if skills:
            best[n] = min(skills)[1]
    lines = [
        "Skill against ensemble size (best at each N in bold):",
        "",
        "| filter | " + " | ".join(f"N = {n}" for n in sizes) + " |",
        "|---|" + "---|" * len(sizes),
    ]
    for f in filters:
        vals = []
        for n in sizes:
            r = cell.get((f, n))
            v = "—" if r is None else _fmt(r["skill"], r["skill_se"])
            vals.append(f"**{v}**" if best.get(n) == f else v)
        lines.append(f"| {f} | " + " | ".join(vals) + " |")
    lines += [
        f"| *{r['filter']} (N = {int(r['N'])})* | "
        + " | ".join([_fmt(r["skill"], r["skill_se"])] * len(sizes))
        + " |"
        for r in results
        if r["filter"] == BAYES
    ]
    return lines + [""]
