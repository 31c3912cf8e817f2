r"""``genfilter demo``: the main job, through the same pipeline as every experiment.

Each filter of the demo is a config (:mod:`genfilter.experiments.config`) of a named setup
(:mod:`genfilter.experiments.setups`), run by
:func:`~genfilter.experiments.runner.run_config` into a run file of
:mod:`genfilter.io`, then scored by :func:`~genfilter.experiments.reporting.summarize_file`
and drawn by :func:`~genfilter.experiments.reporting.report` — so ``genfilter report`` opens
the demo's output folder like any other.

- ``lorenz63`` (default): FA-APF, the bootstrap PF and the EnKF on stochastic Lorenz-63,
  every filter with the shipped diffusion emulator of the setup's interval as forecast model.
  The default setup is (c), x1 and x3 observed every 0.5 time units: there the filtering
  distribution is far from Gaussian and FA-APF beats the EnKF (docs/results/l63.md); setups
  (a), (b) (every 0.1, where the EnKF is at the Bayes limit) and (d) are one option away.
- ``linear-gaussian``: FA-APF (gaussian and dirac weights), BPF and EnKF with the exact
  linear-Gaussian emulator, against the Kalman filter, which is exact there.
"""

from __future__ import annotations

__all__ = ["DEMOS", "demo_configs", "run_demo", "kalman_row"]

import math
from pathlib import Path
from typing import Any

from .config import ExperimentConfig, parse_config
from .l63_results import ROWS, row_emulator_options

DEMOS: dict[str, dict[str, Any]] = {
    "lorenz63": {
        "emulator": "shipped",
        "particles": 32,
        "steps": 100,
        "burn_in": 10,
        "rows": {
            # genfilter's FA-APF on Lorenz-63: the experiments' row (docs/results/l63.md)
            "FA-APF": "FA-APF",
            "BPF": ("bpf", {}),
            "EnKF": ("enkf", {}),
        },
    },
    "linear-gaussian": {
        "emulator": "true",
        "particles": 256,
        "steps": 30,
        "burn_in": 5,
        "rows": {
            "FA-APF (gaussian weights)": ("fa-apf", {"weights": "gaussian"}),
            "FA-APF (dirac weights)": ("fa-apf", {"weights": "dirac"}),
            "BPF": ("bpf", {}),
            "EnKF": ("enkf", {}),
        },
    },
}
"""The demos: forecast model, default N, steps, burn-in and rows (label -> method and filter
options, or the label of a Lorenz-63 experiment row, :data:`~.l63_results.ROWS`, whose
filter and emulator options it runs)."""


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in label.lower()).strip("-").replace("--", "-")


def _row(row: tuple | str, setup: str) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """``(method, filter options, emulator options)`` of a demo row on ``setup``."""
    if isinstance(row, str):  # an experiment row
        method, options, _ = ROWS[row]
        return method, options, row_emulator_options(row, setup)
    return row[0], row[1], {}


def demo_configs(
    system: str = "lorenz63",
    obs: str = "c",
    particles: int | None = None,
    steps: int | None = None,
    seed: int = 0,
) -> dict[str, ExperimentConfig]:
    """The configs of a demo, ``{label: config}`` (one run each, particles saved)."""
    if system not in DEMOS:
        raise ValueError(f"--system must be one of {sorted(DEMOS)}, got {system!r}")
    d = DEMOS[system]
    if system == "lorenz63":
        if obs not in ("a", "b", "c", "d"):
            raise ValueError(f"--obs must be one of a, b, c, d, got {obs!r}")
        setup = f"l63-{obs}"
    else:
        setup = "linear-gaussian"
    steps = int(steps or d["steps"])
    burn_in = d["burn_in"] if steps > 2 * d["burn_in"] else 0
    return {
        label: parse_config(
            {
                "name": f"demo-{setup}",
                "setup": setup,
                "emulator": d["emulator"],
                "emulator_options": emulator_options,
                "filter": {
                    "method": method,
                    "particles": int(particles or d["particles"]),
                    "options": dict(options),
                },
                "steps": steps,
                "burn_in": burn_in,
                "runs": 1,
                "seed": int(seed),
                "save": "particles",
            }
        )
        for label, row in d["rows"].items()
        for method, options, emulator_options in [_row(row, obs)]
    }


def kalman_row(cfg: ExperimentConfig) -> dict[str, float]:
    """The exact Kalman filter on run 0 of a linear-Gaussian config: expected skill,
    spread, SSR and CRPS of the exact posterior (closed forms for a Gaussian) after the
    burn-in, and the log-evidence."""
    import torch

    from ..filters.kalman import KalmanFilter
    from .runner import build_twin_setup, run_seed
    from .twin import make_twin

    setup = build_twin_setup(cfg)
    twin = make_twin(setup, run_seed(cfg, 0)[0])
    sys_ = setup.system
    D = sys_.dim
    m0 = twin.initial_state.double()
    P0 = max(cfg.initial.std, 1e-6) ** 2 * torch.eye(D, dtype=torch.float64)
    kf = KalmanFilter(sys_.A, sys_.b, sys_.Q).filter(m0, P0, twin.observations)
    b = cfg.burn_in
    sd = torch.sqrt(torch.diagonal(kf.covs, dim1=1, dim2=2))[b:]
    err = (kf.means - twin.truth.double())[b:]
    z = err / sd
    phi = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    Phi = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    crps = sd * (z * (2 * Phi - 1) + 2 * phi - 1 / math.sqrt(math.pi))  # CRPS of N(m, s²)
    sk = err.pow(2).mean(-1).sqrt()
    sp = sd.pow(2).mean(-1).sqrt()
    return {
        "skill": float(sk.mean()),
        "spread": float(sp.mean()),
        "ssr": float((sp / sk).mean()),
        "crps": float(crps.mean()),
        "log_evidence": float(kf.log_likelihood),
    }


def run_demo(
    system: str = "lorenz63",
    out: str | Path = "outputs/demo",
    *,
    obs: str = "c",
    particles: int | None = None,
    steps: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> tuple[str, list[Path]]:
    """Runs a demo into ``out`` (one run file per filter, then the report); returns the
    markdown table and the paths written."""
    from .reporting import report, summarize_file
    from .runner import run_config

    configs = demo_configs(system, obs, particles, steps, seed)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    rows: dict[str, dict[str, Any]] = {}
    summaries: dict[Path, dict[str, Any]] = {}
    if system == "linear-gaussian":
        rows["Kalman (exact)"] = kalman_row(next(iter(configs.values())))
    written = []
    for label, cfg in configs.items():
        path = out / f"{_slug(label)}.nc"
        parts = path.with_name(path.name + ".parts")
        if path.exists() and not parts.exists():
            path.unlink()  # the demo recomputes its runs
        run_config(
            cfg,
            path,
            resume=parts.exists(),
            progress=progress,
            label=label,
            command=f"genfilter demo --system {system}",
        )
        s = summaries[path] = summarize_file(path)
        rows[label] = {k: s[k] for k in ("skill", "spread", "ssr", "crps", "mean_ess", "seconds")}
        written.append(path)
    cols = ["skill", "spread", "ssr", "crps", "mean_ess", "seconds"]
    if system == "linear-gaussian":
        cols.append("log_evidence")
        for label, path in zip(configs, written):
            rows[label]["log_evidence"] = summaries[path]["log_evidence"]
    lines = ["| filter | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for label, r in rows.items():
        vals = [
            (
                "—"
                if r.get(c) is None or (isinstance(r.get(c), float) and math.isnan(r[c]))
                else f"{r[c]:.3f}"
            )
            for c in cols
        ]
        lines.append(f"| {label} | " + " | ".join(vals) + " |")
    table = "\n".join(lines)
    (out / "table.md").write_text(table + "\n")
    figures = report(out)
    return table, [out / "table.md", *written, *figures]
